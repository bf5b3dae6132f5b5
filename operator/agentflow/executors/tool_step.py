"""One attempt of a tool step: the grant, redaction of what leaves the sandbox, the call, screening.

Tool grants are deny by default: a tool step with an agentRef runs only a tool the Agent lists AND a
ToolPolicy matching the Agent's labels declares; without an agentRef the tool must be declared by some
ToolPolicy (the decision is :func:`agentflow.validation.grants.decide_tool`, the same the operator makes).
A tool with ``requiresApproval`` runs only in a step the engine gates: it waits for a human decision first.

``http``, ``container`` and ``mcp`` tools run outside the sandbox (an MCP server is a third party, a stdio one
included): what they receive is redacted unless the Agent's ``pii.allowRestoreToTools`` lets values through;
builtin and wasm tools run in the sandbox and get the inputs as they are. Every tool's output is screened for
prompt injection. An MCP server's tool is named ``tool: NAME/TOOL``; the step's inputs are its arguments.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agentflow.engine.values import CallRecord, StepRequest
from agentflow.llm import canonical_json
from agentflow.models import Agent, StepSpec
from agentflow.security.context import DEFAULT_INJECTION, DEFAULT_PII
from agentflow.tools import ToolError
from agentflow.validation.grants import ToolDenied, ToolGrant, approval_gates, decide_tool, tool_steps

from .attempt import StepServices, Who, fail
from .screening import Screening

EXTERNAL_TOOL_KINDS = frozenset({"http", "container", "mcp"})
"""Tool kinds that run outside the cluster's sandbox: their inputs are redacted."""


def allowed_tool(services: StepServices, step: StepSpec) -> ToolGrant:
    """The grant of the tool a step may call, deny by default; StepFailure (ToolNotAllowed/UnknownTool) otherwise."""
    try:
        return decide_tool(step, services.catalog)
    except ToolDenied as denied:
        raise fail(denied.type, denied.message, denied.retryable) from None


def gated_by_approval(services: StepServices, step: StepSpec) -> bool:
    """Whether a human approves each call of ``step``'s tool before it runs.

    The drivers compile the plan with :func:`agentflow.validation.grants.approval_gates` of the same catalog,
    so the engine pauses every step whose granted tool has requiresApproval and starts it only once approved.
    """
    key = next((k for k, s in tool_steps(services.workflow) if s is step), step.name)
    return key in approval_gates(services.workflow, services.catalog)


async def run_tool_step(services: StepServices, request: StepRequest, step: StepSpec,
                        calls: list[CallRecord]) -> Any:
    grant = allowed_tool(services, step)
    tool = grant.tool
    if tool.requires_approval and not gated_by_approval(services, step):
        raise fail(
            "ApprovalRequired",
            f"step {step.name!r}: tool {tool.name!r} has requiresApproval, but no approval step gates "
            "this step; make it depend on an approval step (or, in a state machine, enter its state "
            "only from an approval state)",
        )
    agent = services.agent(step) if step.agent_ref is not None else None
    return await run_tool(services, request, grant, agent, calls)


async def run_tool(services: StepServices, request: StepRequest, grant: ToolGrant, agent: Agent | None,
                   calls: list[CallRecord]) -> Any:
    """Call the granted tool with ``request.inputs``: redaction, the call, screening, audit."""
    screening = Screening(services, Who.of(request, agent), override=request.screening)
    try:
        return await _attempt(services, screening, request, grant, agent, calls)
    finally:
        await services.record(screening.events)


async def _attempt(services: StepServices, screening: Screening, request: StepRequest, grant: ToolGrant,
                   agent: Any, calls: list[CallRecord]) -> Any:
    tool = grant.tool
    pii = agent.spec.pii if agent is not None else DEFAULT_PII
    injection = agent.spec.injection if agent is not None else DEFAULT_INJECTION
    inputs: Any = dict(request.inputs)
    redaction = await screening.redaction(pii) if tool.kind in EXTERNAL_TOOL_KINDS else None
    if redaction is not None:
        if pii.allow_restore_to_tools:
            inputs = redaction.restore(inputs)
        else:
            inputs = await screening.redact(redaction, inputs, f"tool {grant.ref}", "tool")
    try:
        outcome = await services.tools.call(tool, inputs, idempotency_key=request.idempotency_key,
                                            deadline=request.deadline, member=grant.member)
    except ToolError as exc:
        raise fail(exc.type, exc.message, exc.retryable) from exc
    digest = hashlib.sha256(canonical_json({"tool": grant.ref, "inputs": dict(request.inputs)})).hexdigest()
    calls.append(CallRecord(kind="tool", name=grant.ref, request_hash=digest, response=outcome.output,
                            cost_usd=outcome.cost_usd, latency_ms=outcome.latency_ms))
    output = outcome.output
    await screening.screen(output, f"tool {grant.ref!r} output", injection, pii)
    if redaction is not None and len(redaction.tokens):
        await screening.keep(redaction)
        if pii.restore == "output":
            output = redaction.restore(output)
    return output
