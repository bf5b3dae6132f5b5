"""The local runner's gateway: the same Gateway service the operator serves, for runs on a laptop.

:func:`local_gateway` builds it for a bundle of manifests: a MemoryLedger, the Budgets found in the
manifests (:class:`CatalogBudgets`, through agentflow.cost.scope.lines_for, like the operator), the
response cache and the router, and the Provider the environment selects (the offline model when no
provider is configured: then token counts are estimated and prices are 0, and litellm is never imported,
which keeps the quickstart quick). It hands out a ChatClient per attempt (:class:`LocalModels`):

    in-process executor     an InProcessGatewayClient bound to the attempt
    step subprocesses       the same Gateway over HTTP on 127.0.0.1 (:class:`LoopbackGateway`): the child
                            gets the URL and a random token good for its one attempt, exactly as a step
                            pod gets the operator's gateway and its attempt token

Endpoints: the local user is the platform, so an Agent's apiBase may be any URL, but the environment's
provider keys go only to the providers' own endpoints (and to AGENTFLOW_API_BASE): a manifest from
elsewhere cannot make a local run send OPENAI_API_KEY to an address of its choosing.
"""

from __future__ import annotations

import secrets

from ..audit.records import AuditSink
from ..engine.values import StepRequest, step_of_node
from ..llm import Provider
from ..memory import EpisodeSource
from ..models import Catalog, Workflow
from ..storage.ledger import BudgetLedger
from ..storage.memory_ledger import MemoryLedger
from ..telemetry import Tracing
from .budgets import CatalogBudgets
from .embeddings import Embeddings
from .endpoints import EndpointPolicy
from .inprocess import InProcessGatewayClient
from .memory import GatewayMemory, StoreFactory
from .server import AuthError, GatewayServer
from .service import Attribution, Gateway, attribution_for

__all__ = ["LocalModels", "LoopbackGateway", "local_gateway"]

LOCAL_ENDPOINTS = EndpointPolicy(allow_unlisted=True)
"""Any apiBase, never with an environment key (see the module docstring)."""


class LocalModels:
    """The local runner's ModelAccess: a ChatClient per attempt, charged to that attempt."""

    def __init__(self, gateway: Gateway, workflow: Workflow, catalog: Catalog, namespace: str = "default",
                 memory: GatewayMemory | None = None) -> None:
        self.gateway = gateway
        self.memory = memory
        self.workflow = workflow
        self.catalog = catalog
        self.namespace = workflow.metadata.namespace or namespace
        self._steps = workflow.spec.step_index()  # a lookup per model call: once, not O(steps)

    def attribution(self, request: StepRequest) -> Attribution:
        return attribution_for(
            namespace=self.namespace,
            run_uid=request.run_id,
            node=request.node,
            attempt=request.attempt,
            workflow=self.workflow,
            step=self._steps.get(request.step or step_of_node(request.node)),
            agents=self.catalog.agents,
            agent_name=request.agent,
        )

    def client(self, request: StepRequest) -> InProcessGatewayClient:
        return InProcessGatewayClient(self.gateway, self.attribution(request), self.memory)


def local_gateway(workflow: Workflow, catalog: Catalog, provider: Provider, *, ledger: BudgetLedger | None = None,
                  audit: AuditSink | None = None, memory_store: StoreFactory | None = None,
                  episodes: EpisodeSource | None = None, tracing: Tracing | None = None) -> LocalModels:
    """The in-process Gateway of a local run and its per-attempt clients; with ``memory_store`` (and
    ``episodes``) the agents' memory tools (agentflow.gateway.memory)."""
    gateway = Gateway(
        ledger=ledger if ledger is not None else MemoryLedger(),
        provider=provider,
        budgets=CatalogBudgets(catalog.budgets.values()),
        endpoints=LOCAL_ENDPOINTS,
        audit=audit,
        tracing=tracing,
    )
    memory = GatewayMemory(Embeddings(gateway), memory_store, episodes, tracing=tracing)
    return LocalModels(gateway, workflow, catalog, memory=memory)


class LoopbackGateway:
    """``models``' Gateway over HTTP on 127.0.0.1, for step subprocesses: one random token per attempt.

    ``issue(request)`` gives the token of an attempt (valid until ``revoke``); ``url`` is where the child
    calls. Start it with ``await start()``, stop it with ``await stop()``.
    """

    def __init__(self, models: LocalModels) -> None:
        self.models = models
        self._tokens: dict[str, Attribution] = {}
        self._server = GatewayServer(models.gateway, self._authenticate, memory=models.memory)
        self._started = False

    async def _authenticate(self, token: str) -> Attribution:
        who = self._tokens.get(token)
        if who is None:
            raise AuthError("unknown or revoked token: it is not the token of a running attempt of this run")
        return who

    async def start(self) -> None:
        if not self._started:
            await self._server.start("127.0.0.1", 0)
            self._started = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def issue(self, request: StepRequest) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.models.attribution(request)
        return token

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    async def stop(self) -> None:
        if self._started:
            await self._server.stop()
            self._started = False
