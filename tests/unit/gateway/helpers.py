"""Builders and a scripted upstream for the gateway tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from agentflow.gateway.service import Attribution
from agentflow.llm import ChatRequest, Endpoint, ModelError, ModelResponse, Provider, approximate_token_counter
from agentflow.llm.chat import StreamDelta
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
    """An Upstream answering from a script: a ModelError to raise or None for a normal answer."""

    cost_usd: float = 0.001
    script: deque[ModelError | None] = dataclasses.field(default_factory=deque)
    received: list[ChatRequest] = dataclasses.field(default_factory=list)
    endpoints: list[Endpoint] = dataclasses.field(default_factory=list)
    costs: dict[str, float] = dataclasses.field(default_factory=dict)

    async def complete(self, request: ChatRequest, endpoint: Endpoint) -> ModelResponse:
        self.received.append(request)
        self.endpoints.append(endpoint)
        outcome = self.script.popleft() if self.script else None
        if outcome is not None:
            raise outcome
        return ModelResponse(text=f"answer from {request.model}", model=request.model, input_tokens=10,
                             output_tokens=5, cost_usd=self.costs.get(request.model, self.cost_usd))


@dataclasses.dataclass
class ScriptedStream(Scripted):
    """A streaming Upstream: the answer of ``Scripted`` in ``pieces`` pieces; ``fail_at`` raises that failure
    after so many pieces; ``gate`` (when set) is awaited before each piece after the first."""

    pieces: int = 3
    fail_at: tuple[int, ModelError] | None = None
    gate: asyncio.Event | None = None
    closed: list[str] = dataclasses.field(default_factory=list)

    async def stream(self, request: ChatRequest, endpoint: Endpoint) -> AsyncIterator[StreamDelta | ModelResponse]:
        self.received.append(request)
        self.endpoints.append(endpoint)
        outcome = self.script.popleft() if self.script else None
        if outcome is not None:
            raise outcome
        text = f"answer from {request.model}"
        size = -(-len(text) // self.pieces)
        try:
            for i in range(self.pieces):
                if self.fail_at is not None and i == self.fail_at[0]:
                    raise self.fail_at[1]
                if i and self.gate is not None:
                    await self.gate.wait()
                yield StreamDelta(text[i * size:(i + 1) * size])
        except GeneratorExit:
            self.closed.append(request.model)
            raise
        yield ModelResponse(text=text, model=request.model, input_tokens=10, output_tokens=5,
                            cost_usd=self.costs.get(request.model, self.cost_usd))


def failure(model: str, retryable: bool = True, type: str = "ProviderUnavailable") -> ModelError:
    return ModelError(type, f"model {model!r}: scripted failure", retryable=retryable, model=model)


def static_budgets(*lines: BudgetLine) -> Any:
    async def source(who: Attribution, now: datetime) -> list[BudgetLine]:
        return list(lines)

    return source


def provider(upstream: Any, prices: Any = None, count_tokens: Any = approximate_token_counter) -> Provider:
    """A Provider over ``upstream`` (prices: model -> (input, output) USD per token, default none)."""
    return Provider(upstream, count_tokens, prices or (lambda model: None), live=prices is not None)
