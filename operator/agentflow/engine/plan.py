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
    ApprovalSpec,
    RetryPolicy,
    RunOn,
    StateSpec,
    StepKind,
    StepSpec,
    Workflow,
    WorkflowSpec,
    tree_leaves,
)
from .expressions import Expression, ExpressionError, compile_expression
from .journal import canonical_json
from .planner import PlanPolicy
from .templates import Template, compile_template
from .tree import TreePlan, compile_tree


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
class LoopTool:
    """A function an agent loop offers the model: a granted tool, another Agent (``kind`` "agent"), or an MCP
    server (``kind`` "mcp": its tools are offered as ``NAME__TOOL``, ``function["mcpTools"]`` the granted ones
    or ``["*"]``; their schemas come from the server when a turn runs)."""

    name: str
    function: Mapping[str, Any]
    """OpenAI's function object: ``{"name", "description", "parameters"}``."""
    kind: str = "tool"  # "tool" | "agent" | "mcp" | "memory" (memory_search, memory_save, past_runs)
    agent: str | None = None  # kind "agent": the callee
    policy: str = ""
    requires_approval: bool = False
    approval_timeout_seconds: float | None = None

    def gate(self) -> ToolGate | None:
        return ToolGate(self.name, self.policy, self.approval_timeout_seconds) if self.requires_approval else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "function": dict(self.function), "kind": self.kind, "agent": self.agent,
                "policy": self.policy, "requiresApproval": self.requires_approval,
                "approvalTimeoutSeconds": self.approval_timeout_seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoopTool:
        timeout = d.get("approvalTimeoutSeconds")
        return cls(str(d["name"]), dict(d.get("function") or {}), str(d.get("kind", "tool")),
                   str(d["agent"]) if d.get("agent") else None, str(d.get("policy", "")),
                   bool(d.get("requiresApproval", False)), float(timeout) if timeout is not None else None)


@dataclasses.dataclass(frozen=True, slots=True)
class AgentLoop:
    """The loop of one Agent in llm steps: what it may call and its bounds (from the Agent and the ToolPolicies,
    decided by agentflow.validation.grants.agent_loops; recorded in RunStarted like the gates)."""

    agent: str
    tools: Mapping[str, LoopTool]
    denied: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Tools the Agent lists that it may not call, and why (said to the model if it calls one anyway)."""
    max_turns: int = 10
    max_tool_calls: int = 20
    parallel: bool = True
    max_depth: int = 2
    final_tool: bool = False
    conversation_tokens: int | None = None
    """The Agent's memory.kind conversation: its turns see its earlier exchanges of the run, compacted into a summary
    past this many tokens (agentflow.engine.conversation); None: each loop starts fresh."""

    def functions(self) -> list[dict[str, Any]]:
        """The function schemas known without asking a server (MCP servers' tools are listed at the turn)."""
        return [dict(t.function) for t in self.tools.values() if t.kind != "mcp"]

    def mcp_servers(self) -> list[str]:
        return [t.name for t in self.tools.values() if t.kind == "mcp"]

    def resolve(self, name: str) -> tuple[LoopTool | None, str | None]:
        """The tool a model's call ``name`` stands for, and the MCP server's member (``docs__search``)."""
        tool = self.tools.get(name)
        if tool is not None:
            return (tool, None) if tool.kind != "mcp" else (None, None)
        server, sep, member = name.partition("__")
        tool = self.tools.get(server) if sep else None
        if tool is None or tool.kind != "mcp":
            return None, None
        granted = tool.function.get("mcpTools") or []
        return (tool, member) if "*" in granted or member in granted else (None, member)

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "tools": [t.to_dict() for t in self.tools.values()],
                "denied": dict(self.denied), "maxTurns": self.max_turns, "maxToolCalls": self.max_tool_calls,
                "parallel": self.parallel, "maxDepth": self.max_depth, "finalTool": self.final_tool,
                **({"conversationTokens": self.conversation_tokens} if self.conversation_tokens is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AgentLoop:
        tools = [LoopTool.from_dict(t) for t in d.get("tools") or ()]
        conversation = d.get("conversationTokens")
        return cls(str(d["agent"]), {t.name: t for t in tools}, dict(d.get("denied") or {}),
                   int(d.get("maxTurns", 10)), int(d.get("maxToolCalls", 20)), bool(d.get("parallel", True)),
                   int(d.get("maxDepth", 2)), bool(d.get("finalTool", False)),
                   int(conversation) if conversation is not None else None)


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
    planner: PlanPolicy | None = None
    """A plan step's: what its plans may hold (agentflow.engine.planner)."""
    fallback_approval: StepPlan | None = None
    """A plan step's fallback approval (planner.fallback.approval), as an approval step."""


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
class MachinePlan:
    """A state machine a plan step falls back to (spec.fallbackMachines)."""

    name: str
    initial: str
    states: Mapping[str, StatePlan]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    name: str
    namespace: str | None
    mode: str  # "dag" | "fsm" | "tree"
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
    loops: Mapping[str, AgentLoop] = dataclasses.field(default_factory=dict)
    """Agent loops by Agent name: an llm step whose Agent is here runs a loop (see agentflow.engine.run)."""
    prompts: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    """The PromptVersion each family step got (agentflow.prompts.rollout.Choice as a dict, by step), decided
    by the driver from the run id; recorded in RunStarted and read back from there, so a run keeps it."""
    tree: TreePlan | None = None
    """A behavior tree (mode "tree"; see agentflow.engine.tree)."""
    leaves: Mapping[str, StepPlan] = dataclasses.field(default_factory=dict)
    """The steps of a behavior tree's leaves, by step name."""
    machines: Mapping[str, MachinePlan] = dataclasses.field(default_factory=dict)
    """The state machines plan steps fall back to, by name (spec.fallbackMachines)."""

    @property
    def total_steps(self) -> int:
        return len(self.steps) if self.mode == "dag" else len(self.states) if self.mode == "fsm" else len(self.leaves)

    def units(self) -> Mapping[str, StepPlan | StatePlan]:
        """The named units of the plan: DAG steps, states, or a tree's leaves (by step name)."""
        return self.steps if self.mode == "dag" else self.states if self.mode == "fsm" else self.leaves

    def step_plan(self, name: str) -> StepPlan | None:
        """The StepPlan a StepRequest's ``step`` names: a DAG step, a state's step or a tree's leaf."""
        if name in self.steps:
            return self.steps[name]
        state = self.states.get(name)
        return state.step if state is not None else self.leaves.get(name)


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
    planner = PlanPolicy.of(step.planner) if step.planner is not None else None
    fallback = None
    if step.planner is not None and step.planner.fallback is not None and step.planner.fallback.approval is not None:
        approval = step.planner.fallback.approval
        fallback = _step_plan(StepSpec(name=step.name, kind=StepKind.approval, approval=ApprovalSpec(
            message=approval.message or f"step {step.name}: no valid plan came; approve to go on without one",
            approvers=approval.approvers, timeout_seconds=approval.timeout_seconds, notify=approval.notify)), spec, (),
            f"{where}.planner.fallback.approval")
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
        planner=planner,
        fallback_approval=fallback,
    )


def planned_step_plan(body: Mapping[str, Any], parent: StepPlan) -> StepPlan:
    """The StepPlan of a step of a plan (``body``: agentflow.engine.planner.planned_spec), run under the plan
    step ``parent`` (its name is the parent's: StepRequest.step names the plan step). ValueError (pydantic's
    ValidationError) or PlanError when the body is not a valid step."""
    step = StepSpec.model_validate(body)
    if step.kind is StepKind.plan:
        raise PlanError(f"step {step.name}: a plan may not hold plan steps")
    spec = WorkflowSpec(steps=[step], retry=parent.retry)
    return dataclasses.replace(_step_plan(step, spec, (), f"plan.steps[{step.name}]"), name=parent.name,
                               deps=(), deferred=False)


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


def compile_plan(workflow: Workflow, gates: Mapping[str, ToolGate] | None = None, *,
                 max_parallel: int | None = None, loops: Mapping[str, AgentLoop] | None = None,
                 prompts: Mapping[str, Mapping[str, Any]] | None = None) -> Plan:
    """Compile a validated Workflow. Raises PlanError naming the first broken field.

    ``gates``: the tool steps (by DAG step or state name) that wait for a human before each call.
    ``loops``: the agent loops of the Agents of llm steps (agentflow.validation.grants.agent_loops).
    ``prompts``: the PromptVersions the run's family steps got (Plan.prompts).
    ``max_parallel``: the driver's cap on attempts running at once (the runner's --max-parallel, the
    operator's); the plan's parallelism is the lower of it and spec.parallelism.
    """
    if max_parallel is not None and max_parallel < 1:
        raise PlanError(f"max_parallel must be 1 or more, got {max_parallel}")
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
    tree = compile_tree(spec.behavior_tree, _expr) if spec.behavior_tree is not None else None
    leaves = {step.name: _step_plan(step, spec, (), ".".join(_parts(where)) + ".step")
              for where, step in tree_leaves(spec.behavior_tree)}
    outputs = {
        k: e for k, v in spec.outputs.items() if (e := _expr(v, f"spec.outputs.{k}")) is not None
    }
    machines = {}
    for name, sm in spec.fallback_machines.items():
        where = f"spec.fallbackMachines.{name}"
        m_states = {s.name: _state_plan(s, spec, sm.max_visits, f"{where}.states[{i}]")
                    for i, s in enumerate(sm.states)}
        if sm.initial not in m_states:
            raise PlanError(f"{where}.initial: unknown state {sm.initial!r}")
        machines[name] = MachinePlan(name, sm.initial, m_states)
    return Plan(
        name=workflow.metadata.name,
        namespace=workflow.metadata.namespace,
        mode="dag" if spec.steps else "fsm" if spec.state_machine is not None else "tree",
        inputs=spec.inputs,
        steps=steps,
        roots=tuple(s.name for s in spec.steps if not s.depends_on and not steps[s.name].deferred),
        states=states,
        initial=initial,
        outputs=outputs,
        parallelism=min((p for p in (spec.parallelism, max_parallel) if p is not None), default=None),
        timeout=spec.timeout_seconds,
        spec_hash=spec_hash(spec),
        gates=_gates(spec, gates or {}),
        loops=dict(loops or {}),
        prompts={k: dict(v) for k, v in sorted((prompts or {}).items())},
        tree=tree,
        leaves=leaves,
        machines=machines,
    )


def _parts(path: tuple[str | int, ...]) -> list[str]:
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out[-1] += f"[{part}]"
        else:
            out.append(part)
    return out


def _gates(spec: WorkflowSpec, gates: Mapping[str, ToolGate]) -> dict[str, ToolGate]:
    tool_steps = {s.name for s in spec.steps if s.kind is StepKind.tool}
    if spec.state_machine is not None:
        tool_steps.update(s.name for s in spec.state_machine.states if s.step is not None
                          and s.step.kind is StepKind.tool)
    tool_steps.update(step.name for _, step in tree_leaves(spec.behavior_tree) if step.kind is StepKind.tool)
    plan_steps = {key for key, step in spec.keyed_steps() if step.kind is StepKind.plan}
    unknown = sorted(k for k in set(gates) - tool_steps if k.split("/", 1)[0] not in plan_steps)
    if unknown:
        raise PlanError(f"approval gates for {', '.join(unknown)}: not tool steps of this workflow")
    return dict(sorted(gates.items()))
