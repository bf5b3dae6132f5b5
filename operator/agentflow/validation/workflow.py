"""The checks of a Workflow spec: its expressions, its DAG or state machine, its references.

:func:`check_workflow` reports every problem at once. Expressions are
compiled and each name they read is checked against what exists where they
are evaluated: a DAG step may read ``steps.X`` only for an X it depends on
(directly or not), a state only for a state with a step. References to
Agents, PromptVersions, ToolPolicies and Budgets are checked against the
catalog (skipped when it is None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentflow.engine.expressions import Expression, ExpressionError, compile_expression
from agentflow.engine.graph import can_reach, find_cycles, format_cycle, reachable
from agentflow.engine.templates import compile_template
from agentflow.engine.tree import ROOT_ID
from agentflow.models import (
    Agent,
    BehaviorNode,
    Catalog,
    RunOn,
    StateMachineSpec,
    StepKind,
    StepSpec,
    ToolPolicy,
    TreeNodeType,
    WorkflowSpec,
    split_tool_ref,
    tree_nodes,
)
from agentflow.models.limits import MAX_RUN_NODES, MAX_TREE_DEPTH, MAX_TREE_NODES
from agentflow.prompts.rollout import RolloutError, resolve, rollout_of

from .findings import CEL_NAMES, Finding, PathParts, StepCheck, known_names, strings_in
from .schemas import schema_and_instances
from .templates import workflow_step_findings
from .values import json_value_findings

__all__ = ["check_workflow"]

_BASE_ROOTS = frozenset({"inputs", "steps", "workflow"})
_ITEM_ROOTS = frozenset({"item", "index"})
_TRANSITION_ROOTS = _BASE_ROOTS | {"output", "error"}


def check_workflow(spec: WorkflowSpec, catalog: Catalog | None = None, *, grants: bool = True) -> list[Finding]:
    """Every problem of a Workflow spec; paths are relative to the Workflow body (they start with "spec").

    ``grants=False`` leaves out tools that are declared but denied to the step's Agent (the operator fails
    those steps when they start, see agentflow.validation.grants); undeclared tools are still reported.
    """
    return _WorkflowChecker(spec, catalog, grants).run()


class _WorkflowChecker:
    """Collects the findings of one Workflow spec."""

    def __init__(self, spec: WorkflowSpec, catalog: Catalog | None, grants: bool = True) -> None:
        self.spec = spec
        self.catalog = catalog
        self.grants = grants
        self.findings: list[Finding] = []

    def add(self, path: PathParts, message: str) -> None:
        self.findings.append((path, message))

    # Expressions

    def expression(self, text: str, path: PathParts, allowed: frozenset[str], step_check: StepCheck) -> None:
        try:
            expr = compile_expression(text)
        except ExpressionError as exc:
            self.add(path, str(exc))
            return
        self.names(expr, path, allowed, step_check)

    def template(self, value: Any, path: PathParts, allowed: frozenset[str], step_check: StepCheck) -> None:
        for where, text in strings_in(value, path):
            try:
                template = compile_template(text)
            except ExpressionError as exc:
                self.add(where, str(exc))
                continue
            for expr in template.expressions:
                self.names(expr, where, allowed, step_check)

    def names(
        self, expr: Expression, path: PathParts, allowed: frozenset[str], step_check: StepCheck
    ) -> None:
        for root in sorted(expr.roots - allowed - CEL_NAMES):
            if root in _ITEM_ROOTS:
                why = f"{root} exists only in the inputs of a forEach step"
            elif root in ("output", "error"):
                why = f"{root} exists only in the when of a state-machine transition"
            else:
                why = f"unknown name {root!r}; expressions here can read {', '.join(sorted(allowed))}"
            self.add(path, f"expression {expr.text!r}: {why}")
        for ref in sorted(expr.step_refs):
            problem = step_check(ref)
            if problem is not None:
                self.add(path, f"expression {expr.text!r}: {problem}")

    def step(self, step: StepSpec, path: PathParts, step_check: StepCheck) -> None:
        if step.when is not None:
            self.expression(step.when, [*path, "when"], _BASE_ROOTS, step_check)
        if step.for_each is not None:
            self.expression(step.for_each, [*path, "forEach"], _BASE_ROOTS, step_check)
        allowed = _BASE_ROOTS | _ITEM_ROOTS if step.for_each is not None else _BASE_ROOTS
        self.findings.extend(json_value_findings(step.inputs, [*path, "inputs"]))
        self.template(step.inputs, [*path, "inputs"], allowed, step_check)
        if step.approval is not None:
            self.template(step.approval.message, [*path, "approval", "message"], allowed, step_check)
        if step.planner is not None:
            self.planner(step, path)
        if self.catalog is not None:
            self.references(step, path, self.catalog)

    def planner(self, step: StepSpec, path: PathParts) -> None:
        """A plan step: its fallback names a state machine of spec.fallbackMachines; what its plans may use exists."""
        assert step.planner is not None
        where: PathParts = [*path, "planner"]
        fallback = step.planner.fallback
        if fallback is not None and fallback.state_machine is not None \
                and fallback.state_machine not in self.spec.fallback_machines:
            known = known_names(self.spec.fallback_machines, "fallbackMachines")
            self.add([*where, "fallback", "stateMachine"], f"unknown state machine {fallback.state_machine!r} "
                     f"(declare it in spec.fallbackMachines); {known}")
        catalog = self.catalog
        if catalog is None:
            return
        for i, name in enumerate(step.planner.agents):
            if name not in catalog.agents:
                self.add([*where, "agents", i], f"unknown Agent {name!r}; {known_names(catalog.agents, 'Agents')}")
        for i, name in enumerate(step.planner.prompts):
            if name not in catalog.prompts:
                known = known_names(catalog.prompts, "PromptVersions")
                self.add([*where, "prompts", i], f"unknown PromptVersion {name!r}; {known}")
        for i, name in enumerate(step.planner.tools):
            self.tool_permission(name, None, [*where, "tools", i], catalog)

    def fallback_machines(self) -> None:
        for name, sm in self.spec.fallback_machines.items():
            base: PathParts = ["spec", "fallbackMachines", name]
            for i, state in enumerate(sm.states):
                if state.step is not None and state.step.kind is StepKind.plan:
                    self.add([*base, "states", i, "step", "kind"], "a fallback state machine runs no plan steps")
            self.state_machine(sm, base, outputs=False)

    # References to other resources

    def references(self, step: StepSpec, path: PathParts, catalog: Catalog) -> None:
        agent = None
        if step.agent_ref is not None:
            agent = catalog.agents.get(step.agent_ref.name)
            if agent is None:
                known = known_names(catalog.agents, "Agents")
                self.add([*path, "agentRef", "name"], f"unknown Agent {step.agent_ref.name!r}; {known}")
        ref = step.prompt_ref
        if ref is not None and ref.name is not None and ref.name not in catalog.prompts:
            known = known_names(catalog.prompts, "PromptVersions")
            self.add([*path, "promptRef", "name"], f"unknown PromptVersion {ref.name!r}; {known}")
        if ref is not None and ref.family is not None:
            self.family(ref.family, ref.version, [*path, "promptRef"], catalog)
        if step.kind is StepKind.tool and step.tool:
            self.tool_permission(step.tool, agent, [*path, "tool"], catalog)
        if step.kind is StepKind.workflow:
            self.findings.extend(workflow_step_findings(step, path, catalog))

    def family(self, family: str, version: str | None, path: PathParts, catalog: Catalog) -> None:
        if not any(p.spec.prompt == family for p in catalog.prompts.values()):
            known = known_names({p.spec.prompt for p in catalog.prompts.values()}, "prompt families")
            self.add([*path, "family"], f"unknown prompt family {family!r} (no PromptVersion has spec.prompt "
                     f"{family!r}); {known}")
            return
        try:
            if version is not None:
                resolve(family, version, "", catalog.prompts, catalog.rollouts)
            else:
                rollout_of(family, catalog.prompts.values(), catalog.rollouts.values())
        except RolloutError as exc:
            self.add([*path, "version" if version is not None else "family"], str(exc))

    def tool_permission(self, ref: str, agent: Agent | None, path: PathParts, catalog: Catalog) -> None:
        tool, member = split_tool_ref(ref)
        declaring = [
            n for n, p in sorted(catalog.policies.items()) if any(t.name == tool for t in p.spec.tools)
        ]
        if not declaring:
            known = known_names(catalog.policies, "ToolPolicies")
            self.add(path, f"tool {tool!r} is not declared in any ToolPolicy; declare it in one ({known})")
            return
        self.mcp_member(tool, member, [catalog.policies[n] for n in declaring], path)
        if agent is None or not self.grants:
            return
        name = agent.metadata.name
        if tool not in agent.spec.tools:
            self.add(path, f"Agent {name!r} does not list tool {tool!r} in spec.tools; add it there")
        matching = {p.metadata.name for p in catalog.policies_for(agent)}
        if not matching.intersection(declaring):
            considered = "; ".join(
                f"{n} declares it but its agentSelector {_selector(catalog.policies[n])} does not match"
                for n in declaring
            )
            self.add(
                path,
                f"tool {tool!r} is denied for Agent {name!r}: no ToolPolicy whose agentSelector matches the "
                f"Agent (labels {_labels(agent.metadata.labels)}) declares it (considered: {considered})",
            )

    def mcp_member(self, tool: str, member: str | None, declaring: Sequence[ToolPolicy], path: PathParts) -> None:
        """``tool: NAME/TOOL`` only for an MCP server, which must be named with one of its granted tools."""
        specs = [t for p in declaring for t in p.spec.tools if t.name == tool]
        servers = [t.mcp for t in specs if t.mcp is not None]
        if member is not None and not servers:
            self.add(path, f"tool {tool!r} is a {specs[0].kind} tool, not an MCP server: {tool}/{member} names "
                     f"nothing; use tool: {tool}")
        elif member is None and servers and len(servers) == len(specs):
            example = servers[0].tools[0].replace("*", "TOOL")
            self.add(path, f"tool {tool!r} is an MCP server: name one of its tools, e.g. tool: {tool}/{example}")
        elif member is not None and self.grants and not any(s.grants(member) for s in servers):
            granted = "; ".join(", ".join(s.tools) for s in servers)
            self.add(path, f"tool {member!r} of MCP server {tool!r} is not granted: mcp.tools lists {granted}")

    # DAG

    def dag(self, steps: Sequence[StepSpec]) -> None:
        base: PathParts = ["spec", "steps"]
        first: dict[str, int] = {}
        for i, step in enumerate(steps):
            if step.name in first:
                also = f"spec.steps[{first[step.name]}]"
                self.add([*base, i, "name"], f"duplicate step name {step.name!r} (also {also})")
            else:
                first[step.name] = i
        graph: dict[str, list[str]] = {name: [] for name in first}
        handlers = {s.name: s.run_on.value for s in steps if s.run_on is not RunOn.success and not s.depends_on}
        for i, step in enumerate(steps):
            for j, dep in enumerate(step.depends_on):
                where: PathParts = [*base, i, "dependsOn", j]
                if dep == step.name:
                    self.add(where, f"step {step.name!r} depends on itself; remove it from dependsOn")
                elif dep not in first:
                    self.add(where, f"unknown step {dep!r} in dependsOn; {known_names(first, 'steps')}")
                elif dep in handlers:
                    self.add(where, f"step {step.name!r} depends on {dep!r}, an exit handler (runOn: {handlers[dep]} "
                             "without dependsOn), which runs only after every other step has finished: "
                             f"{step.name!r} could never start. Remove {dep!r} from dependsOn, or give {dep!r} a "
                             "dependsOn of its own so it runs as an ordinary step")
                elif first[step.name] == i and dep not in graph[step.name]:
                    graph[step.name].append(dep)
        for cycle in find_cycles(graph):
            self.add(
                [*base, first[cycle[0]], "dependsOn"],
                f"dependsOn has a cycle: {format_cycle(cycle)}; remove one of these dependencies",
            )
        deferred = {s.name for s in steps if s.run_on is not RunOn.success and not s.depends_on}
        for i, step in enumerate(steps):
            self.step(step, [*base, i], self.dag_step_check(step, graph, deferred))
        self.outputs(lambda ref: None if ref in first else f"unknown step {ref!r}; {known_names(first, 'steps')}")

    def dag_step_check(
        self, step: StepSpec, graph: Mapping[str, Sequence[str]], deferred: set[str]
    ) -> StepCheck:
        ancestors: set[str] | None = None

        def check(ref: str) -> str | None:
            nonlocal ancestors
            if ref not in graph:
                return f"unknown step {ref!r} in steps.{ref}; {known_names(graph, 'steps')}"
            if ref == step.name:
                return f"step {step.name!r} cannot read its own result steps.{ref}"
            if step.name in deferred:  # runs after every step that is not deferred
                if ref in deferred:
                    return f"steps.{ref} may not exist when {step.name!r} runs (both run at the end)"
                return None
            if ancestors is None:
                ancestors = reachable(graph, step.depends_on)
            if ref not in ancestors:
                return f"steps.{ref} does not exist yet when {step.name!r} runs; add {ref!r} to its dependsOn"
            return None

        return check

    def outputs(self, step_check: StepCheck) -> None:
        for key, text in self.spec.outputs.items():
            self.expression(text, ["spec", "outputs", key], _BASE_ROOTS, step_check)

    # State machine

    def state_machine(self, sm: StateMachineSpec, at: Sequence[str | int] = ("spec", "stateMachine"), *,
                      outputs: bool = True) -> None:
        base: PathParts = list(at)
        first: dict[str, int] = {}
        for i, state in enumerate(sm.states):
            if state.name in first:
                also = f"stateMachine.states[{first[state.name]}]"
                self.add([*base, "states", i, "name"], f"duplicate state name {state.name!r} (also {also})")
            else:
                first[state.name] = i
        with_step = {s.name for s in sm.states if s.step is not None}

        def state_check(ref: str) -> str | None:
            if ref not in first:
                known = known_names(with_step, "states with a step")
                return f"unknown state {ref!r} in steps.{ref} (steps.NAME is state NAME's result); {known}"
            if ref not in with_step:
                return f"state {ref!r} has no step, so steps.{ref} never exists"
            return None

        if sm.initial not in first:
            self.add([*base, "initial"], f"unknown initial state {sm.initial!r}; {known_names(first, 'states')}")
        graph: dict[str, list[str]] = {name: [] for name in first}
        for i, state in enumerate(sm.states):
            path: PathParts = [*base, "states", i]
            for j, transition in enumerate(state.transitions):
                if transition.target not in first:
                    why = f"unknown state {transition.target!r}; {known_names(first, 'states')}"
                    self.add([*path, "transitions", j, "target"], why)
                elif first[state.name] == i:
                    graph[state.name].append(transition.target)
                if transition.when is not None:
                    where: PathParts = [*path, "transitions", j, "when"]
                    self.expression(transition.when, where, _TRANSITION_ROOTS, state_check)
            if state.final is None and not state.transitions:
                self.add(
                    [*path, "transitions"],
                    f"state {state.name!r} is not final and has no transitions; add one or set final",
                )
            if state.step is not None:
                if state.step.depends_on:
                    self.add(
                        [*path, "step", "dependsOn"],
                        "dependsOn is for DAG steps (spec.steps); transitions order a state machine's steps",
                    )
                self.step(state.step, [*path, "step"], state_check)
        if outputs:
            self.outputs(state_check)
        if sm.initial in first:
            self.reachability(sm, graph, first, base)
        visits = sum(state.max_visits or sm.max_visits for state in sm.states)
        if visits > MAX_RUN_NODES:
            self.add(base, f"the states may be entered {visits:,} times in all (maxVisits summed over the states), "
                     f"more than the {MAX_RUN_NODES:,} visits a run may hold; lower maxVisits")

    def reachability(
        self,
        sm: StateMachineSpec,
        graph: Mapping[str, Sequence[str]],
        first: Mapping[str, int],
        base: PathParts,
    ) -> None:
        reached = reachable(graph, [sm.initial])
        for name, i in first.items():
            if name not in reached:
                why = f"state {name!r} cannot be reached from the initial state {sm.initial!r}"
                self.add([*base, "states", i], why)
        finals = [s.name for s in sm.states if s.final is not None]
        ending = can_reach(graph, finals)
        if sm.initial not in ending:
            hint = "" if finals else "; mark a state final"
            self.add(base, f"no final state can be reached from the initial state {sm.initial!r}{hint}")
            return
        for name, i in first.items():
            state = sm.states[i]
            if name in reached and name not in ending and state.transitions:
                why = f"state {name!r} has no path to a final state (a loop without exit)"
                self.add([*base, "states", i], why)

    # Behavior tree

    def behavior_tree(self, root: BehaviorNode) -> None:
        nodes = list(tree_nodes(root))
        base: PathParts = ["spec", "behaviorTree"]
        if len(nodes) > MAX_TREE_NODES:
            self.add(base, f"the behavior tree has {len(nodes):,} nodes, more than the {MAX_TREE_NODES:,} a tree may "
                     "hold; split the work over several Workflows")
        first: dict[str, str] = {}  # leaf step names and composite names -> where
        leaves: set[str] = set()
        for where, node in nodes:
            path: PathParts = list(where)
            depth = sum(1 for part in where if part in ("children", "child")) + 1
            if depth == MAX_TREE_DEPTH + 1:
                self.add(path, f"this node is {depth} levels deep, deeper than the {MAX_TREE_DEPTH} a behavior tree "
                         "may nest")
            named = (node.step.name, [*path, "step", "name"]) if node.step is not None else (
                (node.name, [*path, "name"]) if node.name is not None else None)
            if named is not None:
                name, at = named
                if name == ROOT_ID and where != ("spec", "behaviorTree"):
                    self.add(at, f"the name {ROOT_ID!r} is the id of the tree's root; choose another name")
                elif name in first:
                    self.add(at, f"duplicate name {name!r} in the behavior tree (also {first[name]}); step names "
                             "and node names are the ids of the tree's nodes")
                else:
                    first[name] = _dotted(at[:-1] if node.step is None else at[:-2])
                if node.step is not None:
                    leaves.add(name)
            if node.type is TreeNodeType.parallel:
                for field, value in (("successThreshold", node.success_threshold),
                                     ("failureThreshold", node.failure_threshold)):
                    if value is not None and value > len(node.children):
                        self.add([*path, field], f"{field} {value} is more than the {len(node.children)} children "
                                 "of this parallel node")
        self.tree_runs(root)

        def leaf_check(ref: str) -> str | None:
            if ref not in leaves:
                return f"unknown step {ref!r} in steps.{ref}; {known_names(leaves, 'steps of the tree')}"
            return None

        for where, node in nodes:
            path = list(where)
            if node.when is not None:
                self.expression(node.when, [*path, "when"], _BASE_ROOTS, leaf_check)
            step = node.step
            if step is None:
                continue
            here: PathParts = [*path, "step"]
            for field, there, instead in (
                    ("dependsOn", bool(step.depends_on), "the tree orders its steps (sequence, parallel)"),
                    ("forEach", step.for_each is not None, "a tree's leaf runs once per visit (repeat, parallel)"),
                    ("when", step.when is not None, "use a condition node above the step"),
                    ("runOn", step.run_on is not RunOn.success, "use a selector for what runs after a failure"),
                    ("continueOnFailure", step.continue_on_failure, "use a selector or invert above the step")):
                if there:
                    self.add([*here, field], f"{field} is not for a behavior tree's steps: {instead}")
            self.step(step, here, leaf_check)
        self.outputs(leaf_check)

    def tree_runs(self, root: BehaviorNode) -> None:
        """The most leaf runs the tree can make (retry and repeat multiply down the tree) must fit in a run."""
        total = 0
        todo: list[tuple[BehaviorNode, int]] = [(root, 1)]
        while todo:
            node, times = todo.pop()
            if node.type is TreeNodeType.retry:
                times *= (node.limit or 0) + 1
            elif node.type is TreeNodeType.repeat:
                times *= node.count or 1
            if node.step is not None:
                total += times
            todo.extend((c, times) for c in [*node.children, *([node.child] if node.child is not None else [])])
        if total > MAX_RUN_NODES:
            self.add(["spec", "behaviorTree"], f"the tree's steps may run {total:,} times in all (retry limits and "
                     f"repeat counts multiplied down the tree), more than the {MAX_RUN_NODES:,} a run may hold; lower "
                     "them")

    # Whole spec

    def run(self) -> list[Finding]:
        spec = self.spec
        if spec.state_machine is not None:
            self.state_machine(spec.state_machine)
        elif spec.behavior_tree is not None:
            self.behavior_tree(spec.behavior_tree)
        else:
            self.dag(spec.steps)
        self.fallback_machines()
        inputs: list[tuple[Any, PathParts]] = [(spec.inputs, ["spec", "inputs"])]
        self.findings.extend(json_value_findings(spec.inputs, ["spec", "inputs"]))
        self.findings.extend(schema_and_instances(spec.input_schema, ["spec", "inputSchema"], inputs))
        budget = spec.budget_ref
        if self.catalog is not None and budget is not None and budget.name not in self.catalog.budgets:
            known = known_names(self.catalog.budgets, "Budgets")
            self.add(["spec", "budgetRef", "name"], f"unknown Budget {budget.name!r}; {known}")
        return self.findings


def _dotted(path: PathParts) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _selector(policy: ToolPolicy) -> str:
    return _labels(policy.spec.agent_selector.match_labels)


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
