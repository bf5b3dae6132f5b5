"""The local runner's gateway: the same Gateway service the operator serves, called in-process.

:func:`local_gateway` builds it for a bundle of manifests: a MemoryLedger, the Budgets found in the
manifests (:class:`CatalogBudgets`, through agentflow.cost.scope.lines_for, like the operator), the
response cache and the router, and the model client the environment selects (the offline model when no
provider is configured: then token counts are estimated and prices are 0, and litellm is never imported,
which keeps the quickstart quick). Provider keys come from the environment, as before.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..audit.records import AuditSink
from ..cost.scope import lines_for
from ..gateway.inprocess import InProcessGatewayClient
from ..gateway.service import (
    Attribution,
    Gateway,
    approximate_token_counter,
    attribution_for,
    litellm_prices,
    litellm_token_counter,
)
from ..llm import IDEMPOTENCY_KEY, LiteLLMClient, ModelClient, ModelRequest
from ..models import Budget, Catalog, Workflow
from ..storage.ledger import BudgetLedger, BudgetLine
from ..storage.memory_ledger import MemoryLedger
from .executors import find_step

__all__ = ["CatalogBudgets", "budget_lines", "local_attribution", "local_gateway", "step_of_node"]

_NODE_SUFFIX = re.compile(r"(\[\d+\]|#\d+)$")


def budget_lines(budgets: Iterable[Budget], who: Attribution, now: dt.datetime) -> list[BudgetLine]:
    """The ledger lines of the Budgets that apply to a call of ``who`` (agentflow.cost.scope.lines_for)."""
    agent_labels = who.agent_labels if who.agent is not None else None
    return lines_for(budgets, who.namespace, who.workflow_labels, agent_labels, now, budget_ref=who.budget_ref)


class CatalogBudgets:
    """Budget lines from Budgets held in memory (the local runner's manifests)."""

    def __init__(self, budgets: Iterable[Budget]) -> None:
        self._budgets = list(budgets)

    async def __call__(self, who: Attribution, now: dt.datetime) -> Sequence[BudgetLine]:
        return budget_lines(self._budgets, who, now)


def step_of_node(node: str) -> str:
    """The step (or state) name of a node id: ``classify[3]`` and ``review#2`` -> ``classify``, ``review``."""
    return _NODE_SUFFIX.sub("", node)


def local_attribution(workflow: Workflow, catalog: Catalog, namespace: str = "default"
                      ) -> Callable[[ModelRequest], Attribution]:
    """Attribution of the local runner's calls: the run id and node come in the request's metadata (set by
    InProcessExecutor), the attempt is the third part of its idempotency key ``RUN/NODE/ATTEMPT``."""

    def attribute(request: ModelRequest) -> Attribution:
        meta: Mapping[str, str] = request.metadata
        run_id, node = meta.get("run_id", ""), meta.get("node", "")
        key = meta.get(IDEMPOTENCY_KEY, "")
        prefix = f"{run_id}/{node}/"
        attempt = key[len(prefix):].split("/", 1)[0] if key.startswith(prefix) else ""
        return attribution_for(
            namespace=workflow.metadata.namespace or namespace,
            run_uid=run_id,
            node=node,
            attempt=int(attempt) if attempt.isdigit() else 0,
            workflow=workflow,
            step=find_step(workflow.spec, step_of_node(node)),
            agents=catalog.agents,
        )

    return attribute


def local_gateway(workflow: Workflow, catalog: Catalog, upstream: ModelClient,
                  ledger: BudgetLedger | None = None, audit: AuditSink | None = None) -> InProcessGatewayClient:
    """A model client for the InProcessExecutor that sends every call through an in-process Gateway."""
    live = isinstance(upstream, LiteLLMClient)
    gateway = Gateway(
        ledger=ledger if ledger is not None else MemoryLedger(),
        upstream=upstream,
        budgets=CatalogBudgets(catalog.budgets.values()),
        audit=audit,
        token_counter=litellm_token_counter() if live else approximate_token_counter,
        prices=litellm_prices() if live else (lambda model: None),
    )
    return InProcessGatewayClient(gateway, local_attribution(workflow, catalog))
