"""Builders and a scripted upstream for the gateway tests."""

from __future__ import annotations

import dataclasses
from collections import deque
from datetime import UTC, datetime
from typing import Any

from agentflow.gateway.service import Attribution
from agentflow.llm import ModelError, ModelRequest, ModelResponse
from agentflow.models import Agent
from agentflow.storage.ledger import BudgetLine

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def agent(model: str = "openai/gpt-4o-mini", fallbacks: tuple[str, ...] = (), routing: str = "fallback",
          allowed: tuple[str, ...] = (), name: str = "triage") -> Agent:
    return Agent.model_validate({
        "metadata": {"name": name, "labels": {"team": "support"}},
        "spec": {"role": "triage", "model": {"name": model, "fallbacks": list(fallbacks), "routing": routing},
                 "dataResidency": {"allowedProviders": list(allowed)}},
    })


def who(a: Agent | None = None, *, cache: bool = True, namespace: str = "team-a", node: str = "classify",
        attempt: int = 1) -> Attribution:
    return Attribution(namespace=namespace, workflow="triage", run_uid="uid-1", node=node, attempt=attempt,
                       step="classify", agent=a if a is not None else agent(), prompt="classify-v1",
                       workflow_labels={"app": "support"}, cache=cache)


def line(limit_usd: float | None = 1.0, limit_tokens: int | None = None, hard: bool = True,
         name: str = "team") -> BudgetLine:
    return BudgetLine(budget_uid=f"uid-{name}", namespace="team-a", name=name, window_start=T0, window_end=None,
                      limit_usd=limit_usd, limit_tokens=limit_tokens, hard=hard)


@dataclasses.dataclass
class Scripted:
    """A ModelClient answering from a script: a ModelError to raise or None for a normal answer."""

    cost_usd: float = 0.001
    script: deque[ModelError | None] = dataclasses.field(default_factory=deque)
    received: list[ModelRequest] = dataclasses.field(default_factory=list)
    costs: dict[str, float] = dataclasses.field(default_factory=dict)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.received.append(request)
        outcome = self.script.popleft() if self.script else None
        if outcome is not None:
            raise outcome
        return ModelResponse(text=f"answer from {request.model}", model=request.model, input_tokens=10,
                             output_tokens=5, cost_usd=self.costs.get(request.model, self.cost_usd))


def failure(model: str, retryable: bool = True, type: str = "ProviderUnavailable") -> ModelError:
    return ModelError(type, f"model {model!r}: scripted failure", retryable=retryable, model=model)


def static_budgets(*lines: BudgetLine) -> Any:
    async def source(who: Attribution, now: datetime) -> list[BudgetLine]:
        return list(lines)

    return source
