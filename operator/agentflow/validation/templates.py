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

from collections.abc import Iterable, Mapping
from typing import Any

from agentflow.models import AnyTemplate, Catalog, TemplateRef, Workflow, WorkflowSpec

from .findings import Finding, known_names
from .schemas import schema_and_instances

__all__ = ["declared_inputs", "resolve_spec", "resolve_workflow", "template_input_findings", "unknown_input_findings",
           "unknown_template"]

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
                            path: tuple[str, ...] = ("spec", "inputs")) -> list[Finding]:
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
                           path: tuple[str, ...] = ("spec", "inputs")) -> list[Finding]:
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


def unknown_template(ref: TemplateRef, catalog: Catalog) -> Finding:
    """The finding of a workflowTemplateRef that names no template of its kind (the other kind's name hinted)."""
    other = "WorkflowTemplate" if ref.kind == "ClusterWorkflowTemplate" else "ClusterWorkflowTemplate"
    hint = ""
    if ref.name in catalog.templates_of(other):
        field = "remove kind" if other == "WorkflowTemplate" else f"set kind: {other}"
        hint = f" (there is a {other} {ref.name!r}: {field})"
    known = known_names(catalog.templates_of(ref.kind), f"{ref.kind}s")
    return ["spec", "workflowTemplateRef", "name"], f"unknown {ref.kind} {ref.name!r}{hint}; {known}"


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
