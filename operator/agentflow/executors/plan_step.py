"""One planning attempt of a plan step: ask the step's Agent for a plan, check it like a manifest, ask for repairs.

    screening     the goal is screened (the Agent's injection.untrustedInputs) and redacted (its pii policy) as an
                  llm step's inputs are; tokens in an accepted plan get their values back where pii.restore allows
    the brief     the Agent's instructions, then PLANNER_PREFIX and a JSON brief: the goal (the step's inputs), the
                  allowed kinds, Agents, PromptVersions and tools, the limits, the plan's JSON Schema and, at a
                  checkpoint, the results so far and the steps not started
    the checks    agentflow.engine.planner.check_plan (shape, names, kinds, the planner's lists, cycles, maxSteps,
                  maxDepth), then the plan as a Workflow through the SAME validation as a manifest
                  (agentflow.validation.check_workflow: references, tool grants, expressions), then the cost
                  preflight (agentflow.cost.estimate; its high end against planner.limits.maxCostUsd)
    repairs       an invalid plan goes back to the model as a new turn with every reason (each its own call,
                  idempotency key ``KEY/repair``, ``KEY/repair2``...), at most planner.repairs times
    the output    ``{"accepted": true, "plan", "estimateUsd", "repairs"}`` or ``{"accepted": false, "errors",
                  "repairs"}``: the attempt succeeds either way (the engine records PlanAccepted or PlanRefused
                  and runs the fallback); it fails only when the model cannot be called
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from agentflow.cost.estimate import EstimateError, estimate_workflow
from agentflow.engine.expressions import ExpressionError
from agentflow.engine.planner import PLAN_SCHEMA, PlanPolicy, check_plan, planned_spec
from agentflow.engine.templates import render_text
from agentflow.engine.tokens import approximate_token_counter
from agentflow.engine.values import CallRecord, StepRequest
from agentflow.llm import ChatRequest
from agentflow.models import Agent, ObjectMeta, StepSpec, Workflow, WorkflowSpec
from agentflow.models.manifests import format_path
from agentflow.validation import check_workflow

from .attempt import StepServices, Who, fail
from .llm_step import call_model, untrusted_inputs
from .screening import Screening

PLANNER_PREFIX = "You are planning the steps of a workflow."
"""The start of what a planning call's system message adds to the Agent's instructions."""

_GUIDE = (f"{PLANNER_PREFIX} Answer with one JSON object, a plan valid against planSchema: its steps run in "
          "dependsOn order. Use only the allowed kinds, Agents, PromptVersions and tools, and stay within the "
          "limits. An llm step names agentRef and promptRef; a tool step names tool (and the agentRef it acts for, "
          "when the tool is granted to an Agent); an approval step asks a human its message. Inputs may embed "
          "${{ inputs.NAME }} and ${{ steps.NAME.output }} of the steps it depends on.")


def brief(inputs: Mapping[str, Any], policy: PlanPolicy, planning: Mapping[str, Any],
          agents: Mapping[str, Agent]) -> dict[str, Any]:
    """What the planner is told (JSON): the goal, what it may use, its limits and the plan's schema."""
    out: dict[str, Any] = {"goal": dict(inputs), **policy.brief(), "planSchema": PLAN_SCHEMA}
    out["agents"] = [{"name": a, "role": agents[a].spec.role if a in agents else ""}
                     for a in policy.agents]
    if planning.get("revision"):
        out["checkpoint"] = {"revision": planning.get("revision"), "resultsSoFar": planning.get("results") or {},
                             "notStarted": planning.get("remaining") or [],
                             "say": "revise the steps not started: answer a plan of the steps to run from now on; "
                                    "they may depend on the steps that have finished"}
    return out


def validate(text: str, policy: PlanPolicy, services: StepServices,
             done: Sequence[str]) -> tuple[Any, float, list[str]]:
    """(the plan, its estimated cost in USD, every reason to refuse it), each reason naming its field."""
    steps, errors = check_plan(text, policy, done=done)
    if errors:
        return None, 0.0, errors
    bodies = [{"name": name, "kind": "approval"} for name in done]  # finished steps: depended on, never run again
    bodies += [planned_spec(step) for step in steps]
    try:
        specs = [StepSpec.model_validate(body) for body in bodies]
    except pydantic.ValidationError as exc:
        return None, 0.0, [f"plan.steps: {e['msg']} at {'.'.join(str(p) for p in e['loc'])}" for e in exc.errors()]
    spec = WorkflowSpec(steps=specs, inputs=dict(services.workflow.inputs))
    offset = len(done)
    for path, message in check_workflow(spec, services.catalog):
        parts = list(path)
        if parts[:2] == ["spec", "steps"] and len(parts) > 2 and isinstance(parts[2], int):
            parts = ["plan", "steps", parts[2] - offset, *parts[3:]]
        errors.append(f"{format_path(parts)}: {message}")
    if errors:
        return None, 0.0, errors
    prices = services.prices or (lambda model: None)
    try:
        estimate = estimate_workflow(Workflow(metadata=ObjectMeta(name="plan"), spec=spec), services.catalog, None,
                                     prices, count_tokens=approximate_token_counter)
    except EstimateError as exc:
        return None, 0.0, [f"plan: the cost preflight failed: {exc}"]
    usd = float(estimate.usd.high)
    _, errors = check_plan(text, policy, done=done, estimate_usd=usd)
    return (json.loads(text) if not errors else None), usd, errors


async def run_plan_step(services: StepServices, request: StepRequest, step: StepSpec, calls: list[CallRecord],
                        timeout: float | None) -> Any:
    if step.planner is None:
        raise fail("UnsupportedStepKind", f"step {step.name!r} is not a plan step")
    agent = services.agent(step)
    screening = Screening(services, Who.of(request, agent), override=request.screening)
    try:
        return await _attempt(services, screening, request, step, agent, calls, timeout)
    finally:
        await services.record(screening.events)


async def _attempt(services: StepServices, screening: Screening, request: StepRequest, step: StepSpec, agent: Agent,
                   calls: list[CallRecord], timeout: float | None) -> Any:
    """The goal is screened and redacted as an llm step's inputs are (the Agent's injection and pii policies)."""
    assert step.planner is not None
    spec = agent.spec
    screened = untrusted_inputs(request.inputs, spec.injection)
    if screened:
        await screening.screen(screened, f"step {step.name!r} inputs", spec.injection, spec.pii)
    redaction = await screening.redaction(spec.pii)
    inputs: Mapping[str, Any] = request.inputs
    if redaction is not None:
        inputs = await screening.redact(redaction, dict(request.inputs), spec.model.name, "model")
    policy = PlanPolicy.of(step.planner)
    planning = dict((request.context or {}).get("planning") or {})
    done = [str(name) for name, result in (planning.get("results") or {}).items()
            if isinstance(result, Mapping) and result.get("phase") == "Succeeded"]
    try:  # the Agent's instructions are a template over the inputs, as in every prompt ($${{ is a literal ${{)
        instructions = render_text(agent.spec.instructions, {"inputs": dict(inputs)})
    except ExpressionError as exc:
        raise fail("PromptRenderError", f"step {step.name!r}: Agent {agent.metadata.name!r} instructions: {exc}") \
            from exc
    system = "\n\n".join(t for t in (instructions, _GUIDE) if t)
    user = json.dumps(brief(inputs, policy, planning, services.catalog.agents), ensure_ascii=False, sort_keys=True)
    current = ChatRequest(
        model=spec.model.name,
        messages=({"role": "system", "content": system}, {"role": "user", "content": user}),
        temperature=spec.model.temperature,
        max_tokens=spec.model.max_tokens,
        response_format={"type": "json_schema", "json_schema": {"name": "plan", "schema": PLAN_SCHEMA}},
        timeout_seconds=timeout,
        idempotency_key=request.idempotency_key,
    )
    client = services.models.client(request)
    errors: list[str] = []
    text = ""
    for repair in range(policy.repairs + 1):
        if repair:
            suffix = "/repair" if repair == 1 else f"/repair{repair}"
            refused = ("Your plan was refused:\n- " + "\n- ".join(errors[:20])
                       + "\nAnswer with the whole plan again, corrected.")
            current = dataclasses.replace(
                current, messages=(*current.messages, {"role": "assistant", "content": text},
                                   {"role": "user", "content": refused}),
                idempotency_key=f"{request.idempotency_key}{suffix}")
        text = await call_model(client, current, calls)
        plan, usd, errors = validate(text, policy, services, done)
        if not errors:
            if redaction is not None:
                await screening.keep(redaction)
                if spec.pii.restore != "never":
                    plan = screening.restored(redaction, plan, "step output")
            return {"accepted": True, "plan": plan, "estimateUsd": round(usd, 6), "repairs": repair}
    return {"accepted": False, "errors": errors[:50], "repairs": policy.repairs}
