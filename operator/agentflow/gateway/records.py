"""What the gateway writes about a model call, built apart from writing it: the call log's :class:`LlmCall`
and the audit chain's ``model_call`` event. Pure (the time is passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..audit.records import AuditEvent
from ..llm.chat import ChatRequest, ModelError, ModelResponse
from ..storage.ledger import BudgetLine, LlmCall
from .attribution import Attribution
from .router import RoutingDecision

__all__ = ["llm_call", "model_call_event"]


def llm_call(
    at: datetime,
    who: Attribution,
    request: ChatRequest,
    lines: Sequence[BudgetLine],
    decision: RoutingDecision | None,
    tried: Sequence[Mapping[str, Any]],
    *,
    response: ModelResponse | None = None,
    error: ModelError | None = None,
    status: str | None = None,
) -> LlmCall:
    """The call log's record of one call: answered (``response``), failed (``error``) or ``status``."""
    routing: dict[str, Any] = decision.to_dict() if decision is not None else {}
    if tried:
        routing["tried"] = [dict(t) for t in tried]
    return LlmCall(
        namespace=who.namespace,
        workflow=who.workflow,
        run_uid=who.run_uid,
        node=who.node,
        attempt=who.attempt,
        step=who.step,
        agent=who.agent_name,
        prompt=who.prompt,
        model_requested=request.model,
        model_used=response.model if response is not None else "",
        input_tokens=response.input_tokens if response is not None else 0,
        output_tokens=response.output_tokens if response is not None else 0,
        cost_usd=response.cost_usd if response is not None else 0.0,
        latency_ms=response.latency_ms if response is not None else 0.0,
        cached=response.cached if response is not None else False,
        status=status or (error.type if error is not None else "ok"),
        budgets=tuple(f"{line.namespace}/{line.name}" for line in lines),
        routing=routing,
        at=at,
    )


def model_call_event(at: datetime, who: Attribution, call: LlmCall, decision: str, reason: str = "") -> AuditEvent:
    """The ``model_call`` audit event of a recorded call (``decision``: ok, deny, or the error's type)."""
    data: dict[str, Any] = {
        "runUid": who.run_uid,
        "step": who.step,
        "agent": who.agent_name,
        "prompt": who.prompt,
        "modelRequested": call.model_requested,
        "modelUsed": call.model_used,
        "inputTokens": call.input_tokens,
        "outputTokens": call.output_tokens,
        "costUsd": call.cost_usd,
        "cached": call.cached,
        "budgets": list(call.budgets),
    }
    if call.routing:
        data["routing"] = dict(call.routing)
    if reason:
        data["reason"] = reason
    return AuditEvent(
        kind="model_call",
        actor="gateway",
        namespace=who.namespace,
        subject=who.subject,
        decision=decision,
        at=at.isoformat().replace("+00:00", "Z"),
        data=data,
    )
