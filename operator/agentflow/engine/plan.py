"""A Plan: a Workflow spec compiled once for the engine.

Compiling parses every expression and template, orders the DAG and indexes
dependents, so that :mod:`agentflow.engine.run` does no parsing on its hot
path. Compile only specs that passed :func:`agentflow.validation.check_workflow`;
a spec that did not raises :class:`PlanError` here.

The engine does not see ToolPolicies: the driver says which tool steps pause
for a human before each call (``gates``, from
:func:`agentflow.validation.grants.approval_gates`). The run records them in
its RunStarted event, so resume and replay gate exactly what the run gated.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from ..models.workflow import (
    RetryPolicy,
    RunOn,
    StateSpec,
    StepKind,
    StepSpec,
    Workflow,
    WorkflowSpec,
)
from .expressions import Expression, ExpressionError, Template, compile_expression, compile_template
from .journal import canonical_json


class PlanError(ValueError):
    """The spec cannot be compiled; run `agentflow validate` for every problem."""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolGate:
    """A tool step that waits for a human decision before each call (its tool has requiresApproval)."""

    tool: str
    policy: str
    timeout_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "policy": self.policy, "timeoutSeconds": self.timeout_seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToolGate:
        timeout = d.get("timeoutSeconds")
        return cls(str(d.get("tool", "")), str(d.get("policy", "")), float(timeout) if timeout is not None else None)


@dataclasses.dataclass(frozen=True, slots=True)
class StepPlan:
    name: str
    spec: StepSpec
    kind: StepKind
    deps: tuple[str, ...]
    dependents: tuple[str, ...]
    when: Expression | None
    for_each: Expression | None
    inputs: Template
    approval_message: Template | None
    retry: RetryPolicy
    timeout: float | None
    run_on: RunOn
    parallelism: int | None
    # An exit handler: runs on failure/always and waits for every other step.
    deferred: bool
    continue_on_failure: bool


@dataclasses.dataclass(frozen=True, slots=True)
class TransitionPlan:
    target: str
    on: str
    when: Expression | None


@dataclasses.dataclass(frozen=True, slots=True)
class StatePlan:
    name: str
    step: StepPlan | None
    transitions: tuple[TransitionPlan, ...]
    final: str | None
    max_visits: int


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    name: str
    namespace: str | None
    mode: str  # "dag" | "fsm"
    inputs: Mapping[str, Any]
    steps: Mapping[str, StepPlan]  # DAG steps, in spec order
    roots: tuple[str, ...]  # DAG steps without dependencies, in spec order
    states: Mapping[str, StatePlan]
    initial: str | None
    outputs: Mapping[str, Expression]
    parallelism: int | None
    timeout: float | None
    spec_hash: str
    gates: Mapping[str, ToolGate] = dataclasses.field(default_factory=dict)
    """Tool steps (DAG step or state name) that wait for a human before each call; see ToolGate."""

    @property
    def total_steps(self) -> int:
        return len(self.steps) if self.mode == "dag" else len(self.states)


def _expr(text: str | None, where: str) -> Expression | None:
    if text is None:
        return None
    try:
        return compile_expression(text)
    except ExpressionError as exc:
        raise PlanError(f"{where}: {exc}") from None


def _step_plan(step: StepSpec, spec: WorkflowSpec, dependents: tuple[str, ...], where: str) -> StepPlan:
    try:
        inputs = compile_template(step.inputs)
        message = compile_template(step.approval.message) if step.approval is not None else None
    except ExpressionError as exc:
        raise PlanError(f"{where}.inputs: {exc}") from None
    timeout = step.timeout_seconds
    if step.kind is StepKind.approval and step.approval is not None:
        timeout = step.approval.timeout_seconds
    return StepPlan(
        name=step.name,
        spec=step,
        kind=step.kind,
        deps=tuple(step.depends_on),
        dependents=dependents,
        when=_expr(step.when, f"{where}.when"),
        for_each=_expr(step.for_each, f"{where}.forEach"),
        inputs=inputs,
        approval_message=message,
        retry=step.retry or spec.retry,
        timeout=timeout,
        run_on=step.run_on,
        parallelism=step.parallelism,
        deferred=step.run_on is not RunOn.success and not step.depends_on,
        continue_on_failure=step.continue_on_failure,
    )


def _state_plan(state: StateSpec, spec: WorkflowSpec, default_visits: int, where: str) -> StatePlan:
    step = _step_plan(state.step, spec, (), f"{where}.step") if state.step is not None else None
    transitions = tuple(
        TransitionPlan(t.target, t.result, _expr(t.when, f"{where}.transitions[{i}].when"))
        for i, t in enumerate(state.transitions)
    )
    return StatePlan(
        name=state.name,
        step=step,
        transitions=transitions,
        final=state.final.value if state.final is not None else None,
        max_visits=state.max_visits or default_visits,
    )


def spec_hash(spec: WorkflowSpec) -> str:
    """SHA-256 of the canonical JSON of the spec: replay checks it is unchanged."""
    return hashlib.sha256(canonical_json(spec.dump())).hexdigest()


def compile_plan(workflow: Workflow, gates: Mapping[str, ToolGate] | None = None) -> Plan:
    """Compile a validated Workflow. Raises PlanError naming the first broken field.

    ``gates``: the tool steps (by DAG step or state name) that wait for a human before each call.
    """
    spec = workflow.spec
    names = {s.name for s in spec.steps}
    dependents: dict[str, list[str]] = {s.name: [] for s in spec.steps}
    for step in spec.steps:
        for dep in step.depends_on:
            if dep not in names:
                raise PlanError(f"spec.steps[{step.name}].dependsOn: unknown step {dep!r}")
            dependents[dep].append(step.name)
    steps = {
        s.name: _step_plan(s, spec, tuple(dependents[s.name]), f"spec.steps[{i}]")
        for i, s in enumerate(spec.steps)
    }
    states: dict[str, StatePlan] = {}
    initial = None
    if spec.state_machine is not None:
        sm = spec.state_machine
        states = {
            s.name: _state_plan(s, spec, sm.max_visits, f"spec.stateMachine.states[{i}]")
            for i, s in enumerate(sm.states)
        }
        initial = sm.initial
        if initial not in states:
            raise PlanError(f"spec.stateMachine.initial: unknown state {initial!r}")
    outputs = {
        k: e for k, v in spec.outputs.items() if (e := _expr(v, f"spec.outputs.{k}")) is not None
    }
    return Plan(
        name=workflow.metadata.name,
        namespace=workflow.metadata.namespace,
        mode="dag" if spec.steps else "fsm",
        inputs=spec.inputs,
        steps=steps,
        roots=tuple(s.name for s in spec.steps if not s.depends_on and not steps[s.name].deferred),
        states=states,
        initial=initial,
        outputs=outputs,
        parallelism=spec.parallelism,
        timeout=spec.timeout_seconds,
        spec_hash=spec_hash(spec),
        gates=_gates(spec, gates or {}),
    )


def _gates(spec: WorkflowSpec, gates: Mapping[str, ToolGate]) -> dict[str, ToolGate]:
    tool_steps = {s.name for s in spec.steps if s.kind is StepKind.tool}
    if spec.state_machine is not None:
        tool_steps.update(s.name for s in spec.state_machine.states if s.step is not None
                          and s.step.kind is StepKind.tool)
    unknown = sorted(set(gates) - tool_steps)
    if unknown:
        raise PlanError(f"approval gates for {', '.join(unknown)}: not tool steps of this workflow")
    return dict(sorted(gates.items()))
