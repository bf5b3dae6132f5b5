"""Programs the example manifests run, shipped with the package so that the examples run from any install.

They are demonstrations, not product code: nothing in agentflow imports them (import-linter keeps them in the
top layer), and they answer from their own small, made-up tables. On a cluster the step pod runs them from
the runtime image, which has the package but not the repository's examples/ folder.

    order_server    a demo order system as an MCP server over stdio (examples/manifests/support-agent.yaml)
"""
