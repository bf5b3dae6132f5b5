"""The parts of an agent loop an executor runs: one model turn, or one tool call the model made.

The engine (agentflow.engine.run) holds the loop: it decides which calls run, in what order, when the loop
ends, and gives each part the conversation so far in ``StepRequest.context``. Here:

    a turn        the prompt (the step's PromptVersion rendered with the loop's inputs, or a delegate's task)
                  after the Agent's earlier exchanges of the run (``context["history"]``, memory.kind
                  conversation: its summary, then earlier steps' inputs and answers), plus the conversation so
                  far, with the granted tools offered as functions, through the gateway. Its output is
                  ``{"final": false, "message": M}`` when the model called tools (M the assistant message
                  with its tool_calls), else ``{"final": true, "value": V, "message": M}``, V checked
                  against the PromptVersion's outputSchema with repairs (or, with ``loop.finalTool``, the
                  arguments of the model's ``final_answer`` call)
    a tool call   the same grant decision as a tool step (for the loop's Agent), the arguments checked
                  against the tool's inputSchema, then the tool step's attempt: redaction of what leaves the
                  sandbox, the call, screening of its output

PII: the loop's inputs and a delegate's task are redacted like an llm step's inputs; tool results are
redacted before the model sees them; a final value gets its values back where ``pii.restore`` allows.
Untrusted inputs are screened on the first turn; tool outputs are screened by their call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jsonschema
from jsonschema.exceptions import best_match

from agentflow.engine.schemas import schema_errors
from agentflow.engine.values import CallRecord, StepRequest
from agentflow.llm import ChatRequest, ModelError, PromptRenderError, canonical_json, render_messages, validate_inputs
from agentflow.memory import MemoryStoreError
from agentflow.models import Agent, PromptVersion, StepSpec
from agentflow.security import Redaction
from agentflow.tools import ToolError
from agentflow.tools.functions import discover_functions
from agentflow.validation.grants import (
    FINAL_ANSWER,
    ToolDenied,
    decide_agent_server,
    decide_agent_tool,
    loop_call_ref,
)

from .attempt import StepServices, Who, fail
from .llm_step import answer, complete, composed, output_format, untrusted_inputs
from .screening import Screening
from .tool_step import run_tool

__all__ = ["MemoryCalls", "run_tool_call", "run_turn"]


def _agent(services: StepServices, request: StepRequest) -> Agent:
    name = request.agent
    agent = services.catalog.agents.get(name) if name else None
    if agent is None:
        raise fail("UnknownReference", f"step {request.step!r}: the loop's Agent {name!r} is not loaded")
    return agent


async def run_turn(services: StepServices, request: StepRequest, step: StepSpec, calls: list[CallRecord],
                   timeout: float | None) -> dict[str, Any]:
    agent = _agent(services, request)
    screening = Screening(services, Who.of(request, agent), override=request.screening)
    try:
        return await _turn(services, screening, request, step, agent, calls, timeout)
    finally:
        await services.record(screening.events)


async def _turn(services: StepServices, screening: Screening, request: StepRequest, step: StepSpec, agent: Agent,
                calls: list[CallRecord], timeout: float | None) -> dict[str, Any]:
    context: Mapping[str, Any] = request.context or {}
    spec = agent.spec
    task = context.get("task")
    prompt: PromptVersion | None = None
    redaction = await screening.redaction(spec.pii)
    if task is None:
        name = step.prompt_ref.name if step.prompt_ref is not None else None
        if name is None or (prompt := services.catalog.prompts.get(name)) is None:
            raise fail("UnknownReference", f"step {step.name!r}: its promptRef is not loaded")
        prompt = composed(services, step, prompt)
        try:
            validate_inputs(prompt, request.inputs)
        except PromptRenderError as exc:
            raise fail("PromptRenderError", f"step {step.name!r}: {exc}") from exc
        screened = untrusted_inputs(request.inputs, spec.injection)
        if screened and context.get("turn") == 1:
            await screening.screen(screened, f"step {step.name!r} inputs", spec.injection, spec.pii)
        inputs: Mapping[str, Any] = request.inputs
        if redaction is not None:
            inputs = await screening.redact(redaction, dict(request.inputs), spec.model.name, "model")
        try:
            messages: list[dict[str, Any]] = list(render_messages(agent, prompt, inputs))
        except PromptRenderError as exc:
            raise fail("PromptRenderError", f"step {step.name!r}: {exc}") from exc
    else:
        text = str(task)
        if redaction is not None:
            text = str(await screening.redact(redaction, text, spec.model.name, "model"))
        system = f"You are a {spec.role}." + (f"\n\n{spec.instructions}" if spec.instructions else "")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    history = await _conversation(screening, redaction, context.get("history") or [], spec.model.name, every=True)
    leading = next((i for i, m in enumerate(messages) if m.get("role") != "system"), len(messages))
    messages[leading:leading] = history  # the Agent's earlier exchanges of the run, after its instructions
    messages.extend(await _conversation(screening, redaction, context.get("messages") or [], spec.model.name))
    functions = [dict(f) for f in context.get("tools") or []]
    functions += await _mcp_functions(services, agent, [str(n) for n in context.get("mcp") or []], step.name)
    schema = prompt.spec.output_schema if prompt is not None else None
    final_tool = bool(context.get("finalTool")) and schema is not None
    if final_tool:
        functions.append({"name": FINAL_ANSWER, "description": "Give the final answer: call this when done.",
                          "parameters": dict(schema or {})})
    params = step.model_params
    chat = ChatRequest(
        model=spec.model.name,
        messages=tuple(messages),
        temperature=params.temperature if params and params.temperature is not None else spec.model.temperature,
        max_tokens=params.max_tokens if params and params.max_tokens is not None else spec.model.max_tokens,
        response_format=output_format(prompt) if prompt is not None and not final_tool else None,
        tools=tuple({"type": "function", "function": f} for f in functions),
        tool_choice="required" if final_tool else None,
        parallel_tool_calls=bool(context.get("parallelToolCalls", True)) if functions else None,
        timeout_seconds=timeout,
        idempotency_key=request.idempotency_key,
    )
    client = services.models.client(request)
    response = await complete(client, chat, calls)
    tool_calls = [dict(c) for c in response.tool_calls]
    final_calls = [c for c in tool_calls if (c.get("function") or {}).get("name") == FINAL_ANSWER]
    if final_tool and final_calls:
        value = _final_arguments(final_calls[0], schema or {}, step.name)
        return {"final": True, "value": await _restored(screening, redaction, spec, value),
                "message": response.message()}
    if tool_calls:
        return {"final": False, "message": response.message()}
    value = await answer(client, chat, response.text, calls, prompt, step.name, spec.output_repairs)
    return {"final": True, "value": await _restored(screening, redaction, spec, value),
            "message": {"role": "assistant", "content": response.text}}


async def _mcp_functions(services: StepServices, agent: Agent, servers: list[str], step: str) -> list[dict[str, Any]]:
    """The granted tools of the loop's MCP servers, as the servers list them now."""
    if not servers:
        return []
    try:
        grants = [decide_agent_server(agent, server, services.catalog, step) for server in servers]
        listed = await discover_functions(grants, services.tools.mcp)
    except ToolDenied as denied:
        raise fail(denied.type, denied.message, denied.retryable) from None
    except ToolError as exc:
        raise fail(exc.type, exc.message, exc.retryable) from exc
    return [dict(schema["function"]) for schema in listed.schemas]


async def _conversation(screening: Screening, redaction: Redaction | None, messages: list[Any],
                        model: str, *, every: bool = False) -> list[dict[str, Any]]:
    """The loop's conversation as the model is sent it: tool results redacted (the model never sees values
    it did not see before as tokens). ``every``: every message's text (the Agent's earlier exchanges: their inputs
    and answers come from the journal with their values)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        message = dict(message)
        if redaction is not None and (every or message.get("role") == "tool") and isinstance(
                message.get("content"), str):
            message["content"] = str(await screening.redact(redaction, message["content"], model, "model"))
        out.append(message)
    return out


def _final_arguments(call: Mapping[str, Any], schema: Mapping[str, Any], step: str) -> Any:
    raw = (call.get("function") or {}).get("arguments")
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
        errors = schema_errors(dict(schema), value)
        if errors:
            raise best_match(errors)
    except (ValueError, jsonschema.ValidationError, jsonschema.SchemaError) as exc:
        message = exc.message if isinstance(exc, jsonschema.ValidationError | jsonschema.SchemaError) else str(exc)
        raise fail("InvalidModelOutput", f"step {step!r}: the arguments of final_answer fail the outputSchema: "
                   f"{message}", True) from None
    return value


async def _restored(screening: Screening, redaction: Redaction | None, spec: Any, value: Any) -> Any:
    if redaction is None:
        return value
    await screening.keep(redaction)
    if spec.pii.restore == "never":
        return value
    return screening.restored(redaction, value, "step output")


@runtime_checkable
class MemoryCalls(Protocol):
    """A model client that also runs the attempt's Agent's memory functions (the gateway's, in process or over
    HTTP: agentflow.gateway.memory)."""

    async def call_memory(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]: ...


async def run_tool_call(services: StepServices, request: StepRequest, step: StepSpec,
                        calls: list[CallRecord]) -> Any:
    agent = _agent(services, request)
    call = (request.context or {}).get("call") or {}
    name = str(call.get("name") or "")
    if call.get("kind") == "memory":
        return await _memory_call(services, request, agent, name, calls)
    ref = loop_call_ref(call)
    try:
        grant = decide_agent_tool(agent, ref, services.catalog, step.name)
    except ToolDenied as denied:
        raise fail(denied.type, denied.message, denied.retryable) from None
    tool = grant.tool
    if tool.input_schema:
        try:
            errors = schema_errors(dict(tool.input_schema), dict(request.inputs))
            if errors:
                raise best_match(errors)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(the arguments)"
            raise fail("InvalidArguments", f"tool {name!r}: {where}: {exc.message}") from None
        except jsonschema.SchemaError as exc:
            raise fail("InvalidToolSchema", f"tool {name!r}: its inputSchema is not a JSON Schema: {exc.message}") \
                from None
    return await run_tool(services, request, grant, agent, calls)


async def _memory_call(services: StepServices, request: StepRequest, agent: Agent, name: str,
                       calls: list[CallRecord]) -> Any:
    """memory_search, memory_save or past_runs through the gateway (which scopes it to the attempt's Agent); what
    comes back is screened like a tool's output (a fact saved by an earlier run may carry an injection)."""
    client = services.models.client(request)
    if not isinstance(client, MemoryCalls):
        raise fail("MemoryUnavailable", f"{name}: this executor's model client has no memory functions")
    started = services.clock()
    try:
        output = await client.call_memory(name, dict(request.inputs))
    except MemoryStoreError as exc:
        raise fail(exc.type, exc.message, exc.retryable) from exc
    except ModelError as exc:
        raise fail(exc.type, exc.message, exc.retryable) from exc
    digest = hashlib.sha256(canonical_json({"memory": name, "inputs": dict(request.inputs)})).hexdigest()
    calls.append(CallRecord(kind="tool", name=name, request_hash=digest, response=output,
                            latency_ms=(services.clock() - started) * 1000.0))
    screening = Screening(services, Who.of(request, agent), override=request.screening)
    try:
        await screening.screen(output, f"{name} output", agent.spec.injection, agent.spec.pii)
    finally:
        await services.record(screening.events)
    return output
