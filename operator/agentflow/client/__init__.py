"""The application client: start a run of a template with inputs, follow it, read its outputs. No YAML.

Two places a run can be, three ways to reach them, one API::

    AsyncClient(namespace=..., kubeconfig=...)     a cluster: a Workflow naming the template (agentflow.k8s.kube)
    AsyncConsoleClient(url, token, namespace)      a cluster through its console's HTTP API (a bearer token, no
                                                   kubeconfig): the console makes the same Workflow as the caller
    AsyncLocalClient([manifests], state_dir=...)   this machine: the local runner on the manifests given
    Client / ConsoleClient / LocalClient           the same, blocking (a loop in a thread of their own)

    handle = await client.start("digest", {"topic": "database upgrades"})     # kind="ClusterWorkflowTemplate"
    async for event in handle.events(): ...       # RunEvent: a step's or the run's phase changed
    result = await handle.wait(timeout=600)        # RunResult: phase, outputs, cost_usd, tokens, steps
    await client.get(handle.name)                  # a run started elsewhere (kubectl, a schedule, agentflow run)

Errors (agentflow.client.errors): TemplateNotFound, InputError (``field`` names the input), RunRefused (admission,
RBAC; RunExists: the name is taken), RunNotFound, RunFailed (``step``, ``message``), Timeout. Inputs are checked
against the template before anything is created, with the validation the admission webhook and the reconciler use.
"""

from __future__ import annotations

from .cluster import AsyncClient
from .console import AsyncConsoleClient
from .errors import ClientError, InputError, RunExists, RunFailed, RunNotFound, RunRefused, TemplateNotFound, Timeout
from .handle import RunHandle
from .local import AsyncLocalClient
from .runs import RunEvent, RunResult, StepState
from .sync import Client, ConsoleClient, LocalClient, SyncRunHandle

__all__ = [
    "AsyncClient",
    "AsyncConsoleClient",
    "AsyncLocalClient",
    "Client",
    "ClientError",
    "ConsoleClient",
    "InputError",
    "LocalClient",
    "RunEvent",
    "RunExists",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunRefused",
    "RunResult",
    "StepState",
    "SyncRunHandle",
    "TemplateNotFound",
    "Timeout",
]
