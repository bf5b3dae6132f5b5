"""Workflows made from a template: resolving ``spec.workflowTemplateRef`` into the full Workflow.

:func:`resolve_workflow` is the one resolution, used by ``agentflow validate`` and ``agentflow run`` (templates
from the manifests given), the admission webhook and the reconciler (the namespace's WorkflowTemplates and the
cluster's ClusterWorkflowTemplates), and the application client (agentflow.client). Pure: the templates are given
in a Catalog, never fetched. ``workflowTemplateRef.kind`` picks the table: a WorkflowTemplate is never found under
ClusterWorkflowTemplate or the other way round. Its findings name the Workflow's fields (``spec.inputs.topic``,
``spec.workflowTemplateRef.name``). What the resolved spec names (Agents, Budgets...) is checked against the
same Catalog, the Workflow's own namespace, whichever kind the template is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from agentflow.engine.expressions import ExpressionError
from agentflow.engine.graph import find_cycles, format_cycle, reachable
from agentflow.engine.templates import compile_template
from agentflow.models import AnyTemplate, Catalog, StepSpec, TemplateRef, Workflow, WorkflowSpec, tree_leaves

from .findings import Finding, PathParts, known_names
from .schemas import schema_and_instances

__all__ = [
    "CYCLE",
    "declared_inputs",
    "resolve_spec",
    "resolve_workflow",
    "spec_steps",
    "template_cycle_findings",
    "template_input_findings",
    "unknown_input_findings",
    "unknown_template",
    "workflow_step_findings",
]

_RUN_CONTROLS = ("cancel", "suspend", "budget_ref", "parallelism", "timeout_seconds", "pod_cleanup",
                 "ttl_seconds_after_finished")
"""What a Workflow made from a template may set besides its inputs (overriding the template's)."""


def declared_inputs(spec: WorkflowSpec) -> tuple[set[str], bool]:
    """The input names a template declares (its defaults and inputSchema's properties), and whether its schema
    takes others (additionalProperties not false)."""
    known = set(spec.inputs)
    schema = spec.input_schema or {}
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        known.update(str(k) for k in properties)
    return known, schema.get("additionalProperties", False) is not False


def template_input_findings(template: AnyTemplate, inputs: Mapping[str, Any],
                            path: tuple[str | int, ...] = ("spec", "inputs")) -> list[Finding]:
    """Why these inputs do not fit the template: names it does not declare, and its inputSchema (over the
    template's defaults with the inputs on top)."""
    findings = unknown_input_findings(template, inputs, path)
    merged = {**template.spec.inputs, **inputs}
    if template.spec.input_schema is not None:
        where = f"{template.kind} {template.metadata.name!r} spec.inputSchema"
        for fpath, message in schema_and_instances(template.spec.input_schema, ["<schema>"], [(merged, [*path])]):
            if fpath and fpath[0] == "<schema>":
                findings.append(([*path], f"{where} is not valid: {message}"))
            else:
                findings.append((fpath, f"{message} ({where})"))
    return findings


def unknown_input_findings(template: AnyTemplate, names: Iterable[str],
                           path: tuple[str | int, ...] = ("spec", "inputs")) -> list[Finding]:
    """Input names the template does not declare (none when its inputSchema takes any)."""
    known, open_schema = declared_inputs(template.spec)
    if open_schema:
        return []
    declared = ", ".join(sorted(known)) or "none"
    return [([*path, key], f"{template.kind} {template.metadata.name!r} has no input {key!r}; it declares: "
                           f"{declared}") for key in sorted(set(names) - known)]


def resolve_spec(spec: WorkflowSpec, template: AnyTemplate) -> WorkflowSpec:
    """The template's spec with the Workflow's inputs over its defaults and the Workflow's run controls."""
    update: dict[str, Any] = {"inputs": {**template.spec.inputs, **spec.inputs}}
    for field in _RUN_CONTROLS:
        if field in spec.model_fields_set:
            update[field] = getattr(spec, field)
    return template.spec.model_copy(update=update)


def unknown_template(ref: TemplateRef, catalog: Catalog,
                     path: tuple[str | int, ...] = ("spec", "workflowTemplateRef")) -> Finding:
    """The finding of a workflowTemplateRef (at ``path``) that names no template of its kind (the other kind's
    name hinted)."""
    other = "WorkflowTemplate" if ref.kind == "ClusterWorkflowTemplate" else "ClusterWorkflowTemplate"
    hint = ""
    if ref.name in catalog.templates_of(other):
        field = "remove kind" if other == "WorkflowTemplate" else f"set kind: {other}"
        hint = f" (there is a {other} {ref.name!r}: {field})"
    known = known_names(catalog.templates_of(ref.kind), f"{ref.kind}s")
    return [*path, "name"], f"unknown {ref.kind} {ref.name!r}{hint}; {known}"


def resolve_workflow(workflow: Workflow, catalog: Catalog) -> tuple[Workflow | None, list[Finding]]:
    """The full Workflow (itself when it names no template), or None and why not (findings on its fields)."""
    ref = workflow.spec.workflow_template_ref
    if ref is None:
        return workflow, []
    template = catalog.template(ref)
    if template is None:
        return None, [unknown_template(ref, catalog)]
    findings = template_input_findings(template, workflow.spec.inputs)
    if findings:
        return None, findings
    return workflow.model_copy(update={"spec": resolve_spec(workflow.spec, template)}), []


def workflow_step_findings(step: StepSpec, path: Sequence[str | int], catalog: Catalog) -> list[Finding]:
    """A workflow step's template exists (of its kind), declares the step's input names, and takes its inputs
    when they are all constant (inputs with ${{ }} are checked by the child's admission when it is made)."""
    ref = step.workflow_template_ref
    if ref is None:
        return []
    template = catalog.template(ref)
    if template is None:
        return [unknown_template(ref, catalog, (*path, "workflowTemplateRef"))]
    where = (*path, "inputs")
    try:
        constant = compile_template(step.inputs).is_constant
    except ExpressionError:  # said by the expression checks, on the same field
        constant = False
    if constant:
        return template_input_findings(template, step.inputs, where)
    return unknown_input_findings(template, step.inputs, where)


def spec_steps(spec: WorkflowSpec) -> Iterator[tuple[PathParts, StepSpec]]:
    """(path, step) of every step of a spec: DAG steps, states' steps, behavior tree leaves, fallback machines'."""
    for i, step in enumerate(spec.steps):
        yield ["spec", "steps", i], step
    machines = [(["spec", "stateMachine"], spec.state_machine)] if spec.state_machine is not None else []
    machines += [(["spec", "fallbackMachines", name], sm) for name, sm in spec.fallback_machines.items()]
    for base, sm in machines:
        for i, state in enumerate(sm.states):
            if state.step is not None:
                yield [*base, "states", i, "step"], state.step
    for where, leaf in tree_leaves(spec.behavior_tree):
        yield [*where, "step"], leaf


CYCLE = "workflow steps run templates in a cycle"
"""How a cycle finding begins (the admission webhook refuses these whatever its reference policy)."""


def _key(ref: TemplateRef) -> str:
    return f"{ref.kind}/{ref.name}"


def _step_refs(spec: WorkflowSpec) -> Iterator[tuple[PathParts, TemplateRef]]:
    """(path of the reference, reference) of every workflow step of a spec, in spec order."""
    for path, step in spec_steps(spec):
        if step.workflow_template_ref is not None:
            yield [*path, "workflowTemplateRef", "name"], step.workflow_template_ref


def template_cycle_findings(spec: WorkflowSpec, catalog: Catalog | None, own: TemplateRef | None = None
                            ) -> list[Finding]:
    """Workflow steps that run templates in a cycle: ``own`` (the template this spec is, None for a Workflow)
    or the templates of ``catalog`` its workflow steps lead to, calling themselves again. One finding per step
    of this spec from which a cycle is reachable, on its reference, naming the cycle. A template the catalog
    does not hold ends the search there (reported as unknown elsewhere); without a catalog only a step naming
    ``own`` itself is seen. Static: a cycle that a ``when`` would end at run time is refused too (the depth
    limit is what stops cycles admission cannot see, made by templates created later)."""
    graph: dict[str, list[str]] = {}
    if own is not None:  # first: a cycle through it is told from it
        graph[_key(own)] = [_key(r) for _, r in _step_refs(spec)]
    if catalog is not None:
        for kind in ("WorkflowTemplate", "ClusterWorkflowTemplate"):
            for template in catalog.templates_of(kind).values():
                graph.setdefault(f"{kind}/{template.metadata.name}", [_key(r) for _, r in _step_refs(template.spec)])
    findings: list[Finding] = []
    for path, ref in _step_refs(spec):
        below = reachable(graph, [_key(ref)])
        cycles = find_cycles({node: [n for n in graph[node] if n in below] for node in graph if node in below})
        if cycles:
            findings.append((path, f"{CYCLE} ({format_cycle(cycles[0])}), which would nest child Workflows until "
                                   "the depth limit; break the cycle"))
    return findings
