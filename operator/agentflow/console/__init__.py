"""The AgentFlow console: an HTTP API and a web page to watch runs live, act on them and design workflows.

::

    app.py       the aiohttp app: routes of api.py, the guard (local token and Host check; cluster bearer
                 token), server-sent events, the built page in static/
    api.py       every route with its OpenAPI description (GET /api/openapi.json)
    source.py    RunSource: the seam between the API and where runs live
    local.py     LocalRunSource: the runs of `agentflow run` (runner.store, runner.session)
    cluster.py   ClusterRunSource: Workflows read and steered with the caller's own Kubernetes identity,
                 node details from the PostgreSQL journal
    graph.py     PURE: the whole graph from the compiled plan, laid out, merged with live node states
    details.py   PURE: one node's attempts, calls, inputs, outputs and events from the journal
    designer.py  PURE: parse, validate (agentflow.validation, as `agentflow validate`), export, CRD schemas
    errors.py    ConsoleError and its HTTP statuses

`agentflow ui` (agentflow.commands.ui) serves it.
"""
