"""Plan steps (kind ``plan``): the plan a planning Agent gives, as the engine checks and holds it. Pure.

    the plan         JSON ``{"steps": [{name, kind, agentRef, promptRef, tool, message, inputs, dependsOn}]}``
                     (PLAN_SCHEMA); ``agentRef``/``promptRef`` are names; an approval step's ``message`` is what
                     the approver is asked
    the checks       the executor of the planning attempt (agentflow.executors.plan_step) checks a plan like a
                     manifest (the Workflow validation, tool grants, the cost preflight) and asks the planner to
                     repair it; the engine checks it again here (check_plan: shape, names, kinds, the planner's
                     lists, cycles, maxSteps, maxDepth, the estimate against maxCostUsd), since a posted result is
                     not to be trusted, and refuses what fails (PlanRefused, then the fallback)
    nodes            the planning attempts ``STEP/planN`` (an llm attempt of the plan step's Agent); the steps of
                     plan revision N ``STEP/pN/NAME``; a fallback state machine's visits ``STEP/fallback/STATE#n``;
                     a fallback approval ``STEP/approval``
    the output       the plan step's output is ``{NAME: output}`` of the plan's leaf steps (no other step of the
                     plan depends on them) that succeeded; a fallback's: the last state's output, or the decision
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..models.limits import MAX_PLAN_STEPS
from ..models.workflow import PlannerSpec

__all__ = ["PLAN_SCHEMA", "PlanPolicy", "check_plan", "gate_key", "plan_depth", "planned_spec"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_PLAN_BYTES = 256 * 1024
"""A plan's JSON, at most (like a step's inputs)."""

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {
        "steps": {
            "type": "array", "minItems": 1, "maxItems": MAX_PLAN_STEPS,
            "items": {
                "type": "object",
                "required": ["name", "kind"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": _NAME.pattern, "maxLength": 63},
                    "kind": {"enum": ["llm", "tool", "approval"]},
                    "agentRef": {"type": "string"},
                    "promptRef": {"type": "string"},
                    "tool": {"type": "string"},
                    "message": {"type": "string"},
                    "inputs": {"type": "object"},
                    "dependsOn": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
"""The JSON Schema of a plan (the planner's structured output)."""

_FIELDS = frozenset(PLAN_SCHEMA["properties"]["steps"]["items"]["properties"])


@dataclasses.dataclass(frozen=True, slots=True)
class PlanPolicy:
    """What a plan step's plans may hold and what follows a refused one (from its PlannerSpec)."""

    kinds: tuple[str, ...]
    agents: tuple[str, ...]
    prompts: tuple[str, ...]
    tools: tuple[str, ...]
    max_steps: int
    max_depth: int
    max_cost_usd: float | None
    repairs: int
    replan_every: int | None
    replan_max: int
    fallback: str | None  # "stateMachine" | "approval" | None
    fallback_machine: str | None

    @classmethod
    def of(cls, spec: PlannerSpec) -> PlanPolicy:
        fallback = spec.fallback
        return cls(tuple(spec.kinds), tuple(spec.agents), tuple(spec.prompts), tuple(spec.tools),
                   spec.limits.max_steps, spec.limits.max_depth, spec.limits.max_cost_usd, spec.repairs,
                   spec.replan.every if spec.replan is not None else None,
                   spec.replan.max if spec.replan is not None else 0,
                   None if fallback is None else "stateMachine" if fallback.state_machine is not None else "approval",
                   fallback.state_machine if fallback is not None else None)

    def brief(self) -> dict[str, Any]:
        """What the planner is told of its bounds."""
        return {"allowedKinds": list(self.kinds), "agents": list(self.agents), "prompts": list(self.prompts),
                "tools": list(self.tools), "limits": {"maxSteps": self.max_steps, "maxDepth": self.max_depth,
                                                      "maxCostUsd": self.max_cost_usd}}


def gate_key(step: str, agent: str | None, tool: str) -> str:
    """The key of Plan.gates for a tool a plan step's plan (or its fallback) calls on behalf of ``agent``: ``STEP``
    is the plan step's key (StepRequest.step); a tool step of a plan waits for a human when its tool has
    requiresApproval, as a tool step of the manifest does."""
    return f"{step}/{agent or '-'}/{tool}"


def plan_depth(steps: Sequence[Mapping[str, Any]]) -> int | None:
    """The most steps on one dependsOn chain; None when the dependencies have a cycle."""
    deps = {str(s["name"]): [str(d) for d in s.get("dependsOn") or ()] for s in steps}
    depth: dict[str, int] = {}
    for start in deps:
        if start in depth:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        on_path: set[str] = set()
        while stack:
            name, i = stack.pop()
            if i == 0:
                on_path.add(name)
            parents = [d for d in deps.get(name, ()) if d in deps]
            if i < len(parents):
                stack.append((name, i + 1))
                parent = parents[i]
                if parent in on_path:
                    return None
                if parent not in depth:
                    stack.append((parent, 0))
                continue
            on_path.discard(name)
            depth[name] = 1 + max((depth[p] for p in parents), default=0)
    return max(depth.values(), default=0)


def _parse(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        if len(value.encode("utf-8", "replace")) > MAX_PLAN_BYTES:
            return None, f"plan: {len(value):,} characters, more than a plan may hold ({MAX_PLAN_BYTES:,} bytes)"
        try:
            return json.loads(value), None
        except ValueError as exc:
            return None, f"plan: not JSON: {exc}"
    return value, None


def check_plan(value: Any, policy: PlanPolicy, *, done: Sequence[str] = (),
               estimate_usd: float | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The plan's steps (as given) and every reason to refuse it, each naming its field (``plan.steps[2].tool``).

    ``value``: the plan (a JSON object, or its text). ``done``: names of steps of earlier revisions that may be
    depended on and not reused (a checkpoint's revision). ``estimate_usd``: the cost preflight of the plan."""
    plan, error = _parse(value)
    if error is not None:
        return [], [error]
    if not isinstance(plan, Mapping):
        return [], [f"plan: must be a JSON object with steps, got {type(plan).__name__}"]
    extra = sorted(set(plan) - {"steps"})
    errors = [f"plan.{k}: unknown field (a plan has only steps)" for k in extra[:5]]
    steps = plan.get("steps")
    if not isinstance(steps, list) or not steps:
        return [], [*errors, "plan.steps: must be a non-empty list of steps"]
    if len(steps) > policy.max_steps:
        return [], [*errors, f"plan.steps: {len(steps)} steps, more than planner.limits.maxSteps {policy.max_steps}"]
    names: set[str] = set()
    good: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        where = f"plan.steps[{i}]"
        if not isinstance(step, Mapping):
            errors.append(f"{where}: must be an object, got {type(step).__name__}")
            continue
        errors.extend(f"{where}.{k}: unknown field" for k in sorted(set(step) - _FIELDS)[:5])
        name, kind = step.get("name"), step.get("kind")
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 63:
            errors.append(f"{where}.name: must be a DNS label (lowercase letters, digits, '-'), got {name!r:.80}")
            continue
        if name in names or name in done:
            errors.append(f"{where}.name: {name!r} is used twice")
        names.add(name)
        if kind not in policy.kinds:
            errors.append(f"{where}.kind: {kind!r:.40} is not one of the allowed kinds ({', '.join(policy.kinds)})")
        for field, typ in (("agentRef", str), ("promptRef", str), ("tool", str), ("message", str),
                           ("inputs", dict), ("dependsOn", list)):
            if field in step and not isinstance(step[field], typ):
                errors.append(f"{where}.{field}: must be a {'string' if typ is str else typ.__name__}, "
                              f"got {type(step[field]).__name__}")
        errors.extend(_refs(step, kind, where, policy))
        good.append(dict(step))
    known = names | set(done)
    for i, step in enumerate(good):
        deps = step.get("dependsOn")
        for j, dep in enumerate(deps if isinstance(deps, list) else ()):
            if not isinstance(dep, str) or dep not in known:
                errors.append(f"plan.steps[{i}].dependsOn[{j}]: unknown step {dep!r:.80}")
    if not errors:
        depth = plan_depth([{**s, "dependsOn": [d for d in s.get("dependsOn") or () if d in names]} for s in good])
        if depth is None:
            errors.append("plan.steps: the dependsOn of the steps make a cycle")
        elif depth > policy.max_depth:
            errors.append(f"plan.steps: {depth} steps on one dependsOn chain, deeper than planner.limits.maxDepth "
                          f"{policy.max_depth}")
    if policy.max_cost_usd is not None and estimate_usd is not None and estimate_usd > policy.max_cost_usd:
        errors.append(f"plan: its cost preflight estimate ${estimate_usd:.4f} is above planner.limits.maxCostUsd "
                      f"${policy.max_cost_usd:.4f}")
    return good, errors


def _refs(step: Mapping[str, Any], kind: Any, where: str, policy: PlanPolicy) -> list[str]:
    errors = []
    agent, prompt, tool = step.get("agentRef"), step.get("promptRef"), step.get("tool")
    if kind == "llm" and (not agent or not prompt):
        errors.append(f"{where}: an llm step needs agentRef and promptRef")
    if kind == "tool" and not tool:
        errors.append(f"{where}.tool: a tool step needs tool")
    if kind != "tool" and tool is not None:
        errors.append(f"{where}.tool: only tool steps name a tool")
    if kind != "llm" and prompt is not None:
        errors.append(f"{where}.promptRef: only llm steps name a prompt")
    if kind == "approval" and agent is not None:
        errors.append(f"{where}.agentRef: approval steps have no Agent")
    if isinstance(agent, str) and agent and agent not in policy.agents:
        errors.append(f"{where}.agentRef: Agent {agent!r:.80} is not one the planner may use "
                      f"({', '.join(policy.agents) or 'none'})")
    if isinstance(prompt, str) and prompt and prompt not in policy.prompts:
        errors.append(f"{where}.promptRef: PromptVersion {prompt!r:.80} is not one the planner may use "
                      f"({', '.join(policy.prompts) or 'none'})")
    if isinstance(tool, str) and tool and tool not in policy.tools:
        errors.append(f"{where}.tool: tool {tool!r:.80} is not one the planner may use "
                      f"({', '.join(policy.tools) or 'none'})")
    return errors


def planned_spec(step: Mapping[str, Any], done: Sequence[str] = ()) -> dict[str, Any]:
    """A checked plan step as a StepSpec body (camelCase): dependencies on ``done`` steps are dropped (they
    have finished)."""
    kind = str(step["kind"])
    body: dict[str, Any] = {"name": str(step["name"]), "kind": kind, "inputs": dict(step.get("inputs") or {}),
                            "dependsOn": [d for d in step.get("dependsOn") or () if d not in done]}
    if step.get("agentRef"):
        body["agentRef"] = {"name": step["agentRef"]}
    if kind == "llm" and step.get("promptRef"):
        body["promptRef"] = {"name": step["promptRef"]}
    if kind == "tool":
        body["tool"] = step.get("tool")
    if kind == "approval":
        body["approval"] = {"message": str(step.get("message") or f"approve step {step['name']} of the plan")}
    return body
