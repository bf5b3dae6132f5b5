"""Every check of a set of AgentFlow manifests, reporting all problems at once.

The one validation used by ``agentflow validate``, the admission webhook and
the reconcilers::

    validate_paths(paths)           files and folders -> (resources, problems)
      validate_documents(docs)      YAML documents -> (resources, problems)
        check_resource(r, catalog)  one typed resource -> [(path, message)]
          check_workflow(spec, ...) a Workflow spec -> [(path, message)]
    validate_body(body, catalog)    one admission request body -> [Problem]

``check_*`` return ``(path parts, message)`` pairs with paths relative to the
resource body (``["spec", "steps", 2, "dependsOn", 0]``); the ``validate_*``
functions turn them into :class:`~agentflow.models.manifests.Problem` values
naming the source file and, for YAML input, the line. Problems of the input
are returned, never raised. A catalog of None skips the checks of references
to other resources (Agents, PromptVersions, ToolPolicies, Budgets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import referencing
import referencing.exceptions
from jsonschema.validators import validator_for

from agentflow.engine.expressions import Expression, ExpressionError, compile_expression, compile_template
from agentflow.engine.graph import can_reach, find_cycles, format_cycle, reachable
from agentflow.models import (
    Agent,
    Catalog,
    PromptVersion,
    RunOn,
    StateMachineSpec,
    StepKind,
    StepSpec,
    ToolPolicy,
    Workflow,
    WorkflowSpec,
)
from agentflow.models.manifests import (
    Document,
    LoadedResource,
    ManifestError,
    Problem,
    Resource,
    format_path,
    load_documents,
    parse_resource,
)

__all__ = [
    "Finding", "check_resource", "check_workflow", "validate_body", "validate_documents", "validate_paths",
]

PathParts = list[str | int]
Finding = tuple[PathParts, str]
StepCheck = Callable[[str], str | None]

_BASE_ROOTS = frozenset({"inputs", "steps", "workflow"})
_ITEM_ROOTS = frozenset({"item", "index"})
_TRANSITION_ROOTS = _BASE_ROOTS | {"output", "error"}
_PROMPT_ROOTS = frozenset({"inputs"})  # prompts and Agent instructions render over the step's inputs
# Names CEL itself resolves (type names), allowed wherever an identifier is.
_CEL_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)


def _known(names: Iterable[str], what: str) -> str:
    ordered = sorted(names)
    if not ordered:
        return f"there are no {what}"
    shown = ", ".join(ordered[:12]) + (f", ... ({len(ordered)} in all)" if len(ordered) > 12 else "")
    return f"{what}: {shown}"


def _strings(value: Any, path: PathParts) -> Iterator[tuple[PathParts, str]]:
    """Every string in a JSON value with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from _strings(child, [*path, str(key)])
    elif isinstance(value, list | tuple):
        for i, child in enumerate(value):
            yield from _strings(child, [*path, i])


# --- JSON Schemas ------------------------------------------------------------------------------------------


def _registry() -> referencing.Registry[Any]:
    """An empty registry: jsonschema adds the meta-schemas, and remote $refs are never fetched."""
    return referencing.Registry()


def _schema_findings(schema: Mapping[str, Any], path: PathParts) -> list[Finding]:
    """Problems of a JSON Schema itself, checked against its meta-schema."""
    cls = validator_for(schema)
    # With the format checker, a bad regular expression in "pattern" is a problem here, not a crash later.
    meta = cls(cls.META_SCHEMA, registry=_registry(), format_checker=cls.FORMAT_CHECKER)
    return [
        ([*path, *err.absolute_path], f"not a valid JSON Schema: {err.message}")
        for err in sorted(meta.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path])
    ]


def _instance_findings(schema: Mapping[str, Any], instance: Any, path: PathParts) -> list[Finding]:
    """Where an instance does not satisfy a (valid) schema. Remote $refs are never fetched."""
    validator = validator_for(schema)(schema, registry=_registry())
    try:
        errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    except referencing.exceptions.Unresolvable as exc:
        why = f"the schema has a $ref that cannot be resolved ({exc}); remote references are not fetched"
        return [(path, why)]
    return [([*path, *err.absolute_path], err.message) for err in errors]


def _schema_and_instances(
    schema: Mapping[str, Any] | None, schema_path: PathParts, instances: Sequence[tuple[Any, PathParts]]
) -> list[Finding]:
    if schema is None:
        return []
    findings = _schema_findings(schema, schema_path)
    if not findings:
        for instance, path in instances:
            findings.extend(_instance_findings(schema, instance, path))
    return findings


# --- Workflow ----------------------------------------------------------------------------------------------


class _WorkflowChecker:
    """Collects the findings of one Workflow spec."""

    def __init__(self, spec: WorkflowSpec, catalog: Catalog | None) -> None:
        self.spec = spec
        self.catalog = catalog
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
        for where, text in _strings(value, path):
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
        for root in sorted(expr.roots - allowed - _CEL_NAMES):
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
        self.template(step.inputs, [*path, "inputs"], allowed, step_check)
        if step.approval is not None:
            self.template(step.approval.message, [*path, "approval", "message"], allowed, step_check)
        if self.catalog is not None:
            self.references(step, path, self.catalog)

    # References to other resources

    def references(self, step: StepSpec, path: PathParts, catalog: Catalog) -> None:
        agent = None
        if step.agent_ref is not None:
            agent = catalog.agents.get(step.agent_ref.name)
            if agent is None:
                known = _known(catalog.agents, "Agents")
                self.add([*path, "agentRef", "name"], f"unknown Agent {step.agent_ref.name!r}; {known}")
        if step.prompt_ref is not None and step.prompt_ref.name not in catalog.prompts:
            known = _known(catalog.prompts, "PromptVersions")
            self.add([*path, "promptRef", "name"], f"unknown PromptVersion {step.prompt_ref.name!r}; {known}")
        if step.kind is StepKind.tool and step.tool:
            self.tool_permission(step.tool, agent, [*path, "tool"], catalog)

    def tool_permission(self, tool: str, agent: Agent | None, path: PathParts, catalog: Catalog) -> None:
        declaring = [
            n for n, p in sorted(catalog.policies.items()) if any(t.name == tool for t in p.spec.tools)
        ]
        if not declaring:
            known = _known(catalog.policies, "ToolPolicies")
            self.add(path, f"tool {tool!r} is not declared in any ToolPolicy; declare it in one ({known})")
            return
        if agent is None:
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
        for i, step in enumerate(steps):
            for j, dep in enumerate(step.depends_on):
                where: PathParts = [*base, i, "dependsOn", j]
                if dep == step.name:
                    self.add(where, f"step {step.name!r} depends on itself; remove it from dependsOn")
                elif dep not in first:
                    self.add(where, f"unknown step {dep!r} in dependsOn; {_known(first, 'steps')}")
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
        self.outputs(lambda ref: None if ref in first else f"unknown step {ref!r}; {_known(first, 'steps')}")

    def dag_step_check(
        self, step: StepSpec, graph: Mapping[str, Sequence[str]], deferred: set[str]
    ) -> StepCheck:
        ancestors: set[str] | None = None

        def check(ref: str) -> str | None:
            nonlocal ancestors
            if ref not in graph:
                return f"unknown step {ref!r} in steps.{ref}; {_known(graph, 'steps')}"
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

    def state_machine(self, sm: StateMachineSpec) -> None:
        base: PathParts = ["spec", "stateMachine"]
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
                known = _known(with_step, "states with a step")
                return f"unknown state {ref!r} in steps.{ref} (steps.NAME is state NAME's result); {known}"
            if ref not in with_step:
                return f"state {ref!r} has no step, so steps.{ref} never exists"
            return None

        if sm.initial not in first:
            self.add([*base, "initial"], f"unknown initial state {sm.initial!r}; {_known(first, 'states')}")
        graph: dict[str, list[str]] = {name: [] for name in first}
        for i, state in enumerate(sm.states):
            path: PathParts = [*base, "states", i]
            for j, transition in enumerate(state.transitions):
                if transition.target not in first:
                    why = f"unknown state {transition.target!r}; {_known(first, 'states')}"
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
        self.outputs(state_check)
        if sm.initial in first:
            self.reachability(sm, graph, first, base)

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

    # Whole spec

    def run(self) -> list[Finding]:
        spec = self.spec
        if spec.state_machine is not None:
            self.state_machine(spec.state_machine)
        else:
            self.dag(spec.steps)
        inputs: list[tuple[Any, PathParts]] = [(spec.inputs, ["spec", "inputs"])]
        self.findings.extend(_schema_and_instances(spec.input_schema, ["spec", "inputSchema"], inputs))
        budget = spec.budget_ref
        if self.catalog is not None and budget is not None and budget.name not in self.catalog.budgets:
            known = _known(self.catalog.budgets, "Budgets")
            self.add(["spec", "budgetRef", "name"], f"unknown Budget {budget.name!r}; {known}")
        return self.findings


def _selector(policy: ToolPolicy) -> str:
    return _labels(policy.spec.agent_selector.match_labels)


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def check_workflow(spec: WorkflowSpec, catalog: Catalog | None = None) -> list[Finding]:
    """Every problem of a Workflow spec; paths are relative to the Workflow body (they start with "spec")."""
    return _WorkflowChecker(spec, catalog).run()


# --- other resources ---------------------------------------------------------------------------------------


def _templates(value: Any, path: PathParts, allowed: frozenset[str]) -> list[Finding]:
    findings: list[Finding] = []
    for where, text in _strings(value, path):
        try:
            template = compile_template(text)
        except ExpressionError as exc:
            findings.append((where, str(exc)))
            continue
        for expr in template.expressions:
            for root in sorted(expr.roots - allowed - _CEL_NAMES):
                why = f"unknown name {root!r}; expressions here can read {', '.join(sorted(allowed))}"
                findings.append((where, f"expression {expr.text!r}: {why}"))
    return findings


def _check_prompt(prompt: PromptVersion, catalog: Catalog | None) -> list[Finding]:
    spec = prompt.spec
    findings: list[Finding] = []
    for i, message in enumerate(spec.messages):
        findings.extend(_templates(message.content, ["spec", "messages", i, "content"], _PROMPT_ROOTS))
    evaluations: list[tuple[Any, PathParts]] = [
        (case.inputs, ["spec", "evaluations", i, "inputs"]) for i, case in enumerate(spec.evaluations)
    ]
    findings.extend(_schema_and_instances(spec.input_schema, ["spec", "inputSchema"], evaluations))
    findings.extend(_schema_and_instances(spec.output_schema, ["spec", "outputSchema"], []))
    for i, case in enumerate(spec.evaluations):
        for j, text in enumerate(case.assertions):
            path: PathParts = ["spec", "evaluations", i, "assertions", j]
            try:
                expr = compile_expression(text)
            except ExpressionError as exc:
                findings.append((path, str(exc)))
                continue
            for root in sorted(expr.roots - {"output", "inputs"} - _CEL_NAMES):
                why = f"unknown name {root!r}; assertions can read output, inputs"
                findings.append((path, f"expression {text!r}: {why}"))
    if catalog is not None and spec.canary is not None and spec.canary.baseline.name not in catalog.prompts:
        known = _known(catalog.prompts, "PromptVersions")
        why = f"unknown PromptVersion {spec.canary.baseline.name!r}; {known}"
        findings.append((["spec", "canary", "baseline", "name"], why))
    return findings


def _check_policy(policy: ToolPolicy) -> list[Finding]:
    findings: list[Finding] = []
    first: dict[str, int] = {}
    for i, tool in enumerate(policy.spec.tools):
        path: PathParts = ["spec", "tools", i]
        if tool.name in first:
            why = f"duplicate tool name {tool.name!r} (also spec.tools[{first[tool.name]}])"
            findings.append(([*path, "name"], why))
        else:
            first[tool.name] = i
        findings.extend(_schema_and_instances(tool.input_schema, [*path, "inputSchema"], []))
        findings.extend(_schema_and_instances(tool.output_schema, [*path, "outputSchema"], []))
    return findings


def check_resource(resource: Resource, catalog: Catalog | None = None) -> list[Finding]:
    """Every problem of one typed resource beyond what its model checks; paths relative to its body."""
    if isinstance(resource, Workflow):
        return check_workflow(resource.spec, catalog)
    if isinstance(resource, PromptVersion):
        return _check_prompt(resource, catalog)
    if isinstance(resource, ToolPolicy):
        return _check_policy(resource)
    if isinstance(resource, Agent):
        return _templates(resource.spec.instructions, ["spec", "instructions"], _PROMPT_ROOTS)
    return []


# --- documents ---------------------------------------------------------------------------------------------


def _problems(findings: Sequence[Finding], doc: Document) -> list[Problem]:
    return [Problem(doc.source, format_path(path), message, doc.line_of(path)) for path, message in findings]


def validate_documents(
    docs: Sequence[Document], extra_catalog: Catalog | None = None
) -> tuple[list[LoadedResource], list[Problem]]:
    """Parse and check every document: the resources that parsed, and every problem found."""
    problems: list[Problem] = []
    loaded: list[LoadedResource] = []
    for doc in docs:
        try:
            loaded.append(LoadedResource(parse_resource(doc.body, doc), doc))
        except ManifestError as exc:
            problems.extend(exc.problems)
    catalog = Catalog()
    if extra_catalog is not None:
        catalog.agents.update(extra_catalog.agents)
        catalog.prompts.update(extra_catalog.prompts)
        catalog.policies.update(extra_catalog.policies)
        catalog.budgets.update(extra_catalog.budgets)
    seen: dict[tuple[str, str], LoadedResource] = {}
    for item in loaded:
        resource, doc = item.resource, item.doc
        key = (resource.kind, resource.metadata.name)
        if key in seen:
            other = seen[key].doc
            where = other.source + (f":{other.line_of(['metadata', 'name'])}" if other.lines else "")
            message = f"duplicate {resource.kind} name {resource.metadata.name!r} (also in {where})"
            problems.append(Problem(doc.source, "metadata.name", message, doc.line_of(["metadata", "name"])))
            continue
        seen[key] = item
        if not isinstance(resource, Workflow):
            catalog.add(resource)
    for item in loaded:
        problems.extend(_problems(check_resource(item.resource, catalog), item.doc))
    return loaded, problems


def validate_paths(paths: Sequence[str | Path]) -> tuple[list[LoadedResource], list[Problem]]:
    """Load YAML files and folders and check everything in them together.

    A file that cannot be read or parsed is a problem; the other files are
    still checked.
    """
    docs: list[Document] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        targets = [path]
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            targets = files or [path]  # an empty folder is reported by load_documents
        for target in targets:
            try:
                docs.extend(load_documents([target]))
            except ManifestError as exc:
                problems.extend(exc.problems)
    loaded, found = validate_documents(docs)
    return loaded, problems + found


def validate_body(body: Mapping[str, Any], catalog: Catalog | None = None) -> list[Problem]:
    """Every problem of one manifest body (an admission request's object); sources read "<kind>/<name>"."""
    metadata = body.get("metadata") if isinstance(body, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    kind = body.get("kind") if isinstance(body, Mapping) else None
    doc = Document(f"{kind or '<unknown kind>'}/{name or '<unnamed>'}", body, {})
    try:
        resource = parse_resource(body, doc)
    except ManifestError as exc:
        return list(exc.problems)
    return _problems(check_resource(resource, catalog), doc)
