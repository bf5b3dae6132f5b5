"""One attempt of an llm step: render, screen, redact, ask the gateway, validate with repairs, restore.

    inputs        checked against the PromptVersion's inputSchema as given
    screening     the inputs the Agent's ``injection.untrustedInputs`` names (tool outputs of other steps
                  arrive as inputs), before anything is sent
    redaction     PII in the inputs is replaced by the run's tokens before the prompt is rendered, so the
                  Agent's instructions and the prompt's own text are never rewritten
    the call      one ChatRequest naming the Agent's primary model, through the attempt's ChatClient (the
                  gateway picks among the Agent's models, charges the budgets, answers from its cache)
    validation    the answer against the PromptVersion's outputSchema, with up to ``outputRepairs`` repair
                  requests (each its own call, idempotency key ``KEY/repair``, ``KEY/repair2``, ...)
    restore       tokens in the answer get their values back where ``pii.restore: output`` allows
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agentflow.engine.values import CallRecord, StepRequest
from agentflow.llm import (
    ChatClient,
    ChatRequest,
    ModelError,
    ModelResponse,
    OutputValidationError,
    PromptRenderError,
    parse_output,
    render_messages,
    repair_messages,
    request_hash,
    validate_inputs,
)
from agentflow.models import Agent, PromptVersion, StepSpec
from agentflow.models.agent import InjectionPolicy
from agentflow.prompts.compose import CompositionError, compose

from .attempt import StepServices, Who, fail
from .screening import Screening


def untrusted_inputs(inputs: Mapping[str, Any], policy: InjectionPolicy) -> dict[str, Any]:
    """The inputs the policy screens (``*``: all of them)."""
    if "*" in policy.untrusted_inputs:
        return dict(inputs)
    return {k: v for k, v in inputs.items() if k in policy.untrusted_inputs}


def composed(services: StepServices, step: StepSpec, prompt: PromptVersion) -> PromptVersion:
    """The PromptVersion with its includes resolved (agentflow.prompts.compose) from the loaded catalog."""
    try:
        return compose(prompt, services.catalog.prompts)
    except CompositionError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise fail("PromptRenderError", f"step {step.name!r}: PromptVersion {prompt.metadata.name!r} {where}: "
                   f"{exc.message}", False) from exc


def output_format(prompt: PromptVersion) -> dict[str, Any] | None:
    """The response_format of a PromptVersion with an outputSchema (structured output)."""
    schema = prompt.spec.output_schema
    if schema is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(schema)}}


async def call_model(client: ChatClient, request: ChatRequest, calls: list[CallRecord]) -> str:
    """One call through the gateway, recorded in ``calls``; StepFailure with the gateway's error."""
    return (await complete(client, request, calls)).text


async def complete(client: ChatClient, request: ChatRequest, calls: list[CallRecord]) -> ModelResponse:
    """One call through the gateway, recorded in ``calls`` (its answer: text, or the tool calls it made)."""
    try:
        response = await client.complete(request)
    except ModelError as exc:
        raise fail(exc.type, exc.message, exc.retryable) from exc
    calls.append(CallRecord(
        kind="llm",
        name=response.model,
        request_hash=request_hash(request),
        response=response.text if not response.tool_calls else response.message(),
        input_tokens=response.input_tokens,
        output_tokens=response.output_tokens,
        cost_usd=response.cost_usd,
        latency_ms=response.latency_ms,
        cached=response.cached,
    ))
    return response


async def answer(client: ChatClient, request: ChatRequest, text: str, calls: list[CallRecord],
                 prompt: PromptVersion | None, step: str, repairs: int) -> Any:
    """The value of the model's answer ``text`` to ``request``: checked against the PromptVersion's outputSchema,
    with up to ``repairs`` repair requests (each its own call, idempotency key ``KEY/repair``, ``KEY/repair2``...);
    StepFailure InvalidModelOutput when it still fails. The value holds PII tokens as the model gave them."""
    schema = prompt.spec.output_schema if prompt is not None else None
    current = request
    for repair in range(repairs + 1):
        try:
            return parse_output(text, schema)
        except OutputValidationError as error:
            assert prompt is not None  # without a schema every text parses
            if error.rule == "schema":
                raise fail("InvalidOutputSchema", f"PromptVersion {prompt.metadata.name!r}: {error}") from error
            if repair == repairs:
                raise fail(
                    "InvalidModelOutput",
                    f"step {step!r}: the model's answer failed the outputSchema of PromptVersion "
                    f"{prompt.metadata.name!r} at {error.path} (rule {error.rule!r}) after {repairs} repair "
                    f"request(s) (Agent spec.outputRepairs): {error}",
                    True,
                ) from error
            suffix = "/repair" if repair == 0 else f"/repair{repair + 1}"
            current = dataclasses.replace(
                current,
                messages=tuple(repair_messages(current.messages, text, error)),
                tools=(),
                tool_choice=None,
                parallel_tool_calls=None,
                idempotency_key=f"{request.idempotency_key}{suffix}",
            )
            text = await call_model(client, current, calls)
    raise AssertionError("unreachable")


async def run_llm_step(services: StepServices, request: StepRequest, step: StepSpec, calls: list[CallRecord],
                       timeout: float | None) -> Any:
    agent = services.agent(step)
    screening = Screening(services, Who.of(request, agent), override=request.screening)
    try:
        return await _attempt(services, screening, request, step, agent, calls, timeout)
    finally:
        await services.record(screening.events)


async def _attempt(services: StepServices, screening: Screening, request: StepRequest, step: StepSpec,
                   agent: Agent, calls: list[CallRecord], timeout: float | None) -> Any:
    assert step.prompt_ref is not None
    name = step.prompt_ref.name
    prompt = services.catalog.prompts.get(name) if name is not None else None
    if prompt is None:
        what = f"{name!r} is not loaded" if name is not None else (
            f"family {step.prompt_ref.family!r} was not bound to a version when the run started")
        raise fail("UnknownReference", f"step {step.name!r}: promptRef {what}")
    prompt = composed(services, step, prompt)
    try:
        validate_inputs(prompt, request.inputs)
    except PromptRenderError as exc:
        raise fail("PromptRenderError", f"step {step.name!r}: {exc}") from exc
    spec = agent.spec
    screened = untrusted_inputs(request.inputs, spec.injection)
    if screened:
        await screening.screen(screened, f"step {step.name!r} inputs", spec.injection, spec.pii)
    redaction = await screening.redaction(spec.pii)
    inputs: Mapping[str, Any] = request.inputs
    if redaction is not None:
        inputs = await screening.redact(redaction, dict(request.inputs), spec.model.name, "model")
    try:
        messages = render_messages(agent, prompt, inputs)
    except PromptRenderError as exc:
        raise fail("PromptRenderError", f"step {step.name!r}: {exc}") from exc
    params = step.model_params
    base = ChatRequest(
        model=spec.model.name,
        messages=tuple(messages),
        temperature=params.temperature if params and params.temperature is not None else spec.model.temperature,
        max_tokens=params.max_tokens if params and params.max_tokens is not None else spec.model.max_tokens,
        response_format=output_format(prompt),
        timeout_seconds=timeout,
        idempotency_key=request.idempotency_key,
    )
    client = services.models.client(request)
    text = await call_model(client, base, calls)
    value = await answer(client, base, text, calls, prompt, step.name, spec.output_repairs)
    if redaction is None:
        return value
    await screening.keep(redaction)
    if spec.pii.restore == "never":
        return value
    return screening.restored(redaction, value, "step output")
