"""A summary node of an agent loop (memory.kind conversation): the oldest part of an Agent's conversation compacted.

The engine (agentflow.engine.conversation) decides when and what: ``StepRequest.context["summary"]`` holds the
previous summary, the messages to compact and the most tokens the summary may take. Here: the messages are
redacted like the rest of the conversation (PII tokens, never values, leave for the model), sent as one transcript
through the gateway with the Agent's primary model (attributed to the Agent and charged to its Budgets like a
turn), and the answer is the node's output ``{"summary": TEXT}``. The summary keeps the run's tokens: it is what
later turns are sent, and the journal records it, so replay reads it back without a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentflow.engine.values import CallRecord, StepRequest
from agentflow.llm import ChatRequest, summary_messages
from agentflow.models import StepSpec

from .attempt import StepServices, Who, fail
from .llm_step import call_model
from .screening import Screening

__all__ = ["run_summary"]


async def run_summary(services: StepServices, request: StepRequest, step: StepSpec, calls: list[CallRecord],
                      timeout: float | None) -> dict[str, Any]:
    name = request.agent
    agent = services.catalog.agents.get(name) if name else None
    if agent is None:
        raise fail("UnknownReference", f"step {request.step!r}: the summary's Agent {name!r} is not loaded")
    told: Mapping[str, Any] = (request.context or {}).get("summary") or {}
    spec = agent.spec
    screening = Screening(services, Who.of(request, agent), override=request.screening)
    try:
        redaction = await screening.redaction(spec.pii)
        messages: list[dict[str, Any]] = []
        for message in told.get("messages") or ():
            if not isinstance(message, Mapping):
                continue
            message = dict(message)
            if redaction is not None and isinstance(message.get("content"), str):
                message["content"] = str(await screening.redact(redaction, message["content"], spec.model.name,
                                                                "model"))
            messages.append(message)
        previous = told.get("previous")
        max_tokens = int(told.get("maxTokens") or 256)
        chat = ChatRequest(
            model=spec.model.name,
            messages=tuple(summary_messages(str(previous) if previous is not None else None, messages, max_tokens)),
            temperature=spec.model.temperature,
            max_tokens=max_tokens,
            timeout_seconds=timeout,
            idempotency_key=request.idempotency_key,
        )
        text = await call_model(services.models.client(request), chat, calls)
        if redaction is not None:
            await screening.keep(redaction)
        return {"summary": text.strip()}
    finally:
        await services.record(screening.events)
