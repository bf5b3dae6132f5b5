"""Workflows made from a WorkflowTemplate: resolving ``spec.workflowTemplateRef`` into the full Workflow.

:func:`resolve_workflow` is the one resolution, used by ``agentflow validate`` and ``agentflow run`` (templates
from the manifests given), the admission webhook and the reconciler (templates of the namespace). Pure: the
template is given, never fetched. Its findings name the Workflow's fields (``spec.inputs.topic``,
``spec.workflowTemplateRef.name``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentflow.models import Workflow, WorkflowSpec, WorkflowTemplate

from .findings import Finding, known_names
from .schemas import schema_and_instances

__all__ = ["resolve_spec", "resolve_workflow", "template_input_findings"]

_RUN_CONTROLS = ("cancel", "suspend", "budget_ref", "parallelism", "timeout_seconds", "pod_cleanup",
                 "ttl_seconds_after_finished")
"""What a Workflow made from a template may set besides its inputs (overriding the template's)."""


def _declared(spec: WorkflowSpec) -> tuple[set[str], bool]:
    known = set(spec.inputs)
    schema = spec.input_schema or {}
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        known.update(str(k) for k in properties)
    return known, schema.get("additionalProperties", False) is not False


def template_input_findings(template: WorkflowTemplate, inputs: Mapping[str, Any],
                            path: tuple[str, ...] = ("spec", "inputs")) -> list[Finding]:
    """Why these inputs do not fit the template: names it does not declare, and its inputSchema (over the
    template's defaults with the inputs on top)."""
    findings: list[Finding] = []
    known, open_schema = _declared(template.spec)
    if not open_schema:
        names = ", ".join(sorted(known)) or "none"
        for key in sorted(set(inputs) - known):
            findings.append(([*path, key], f"WorkflowTemplate {template.metadata.name!r} has no input {key!r}; "
                                           f"it declares: {names}"))
    merged = {**template.spec.inputs, **inputs}
    if template.spec.input_schema is not None:
        where = f"WorkflowTemplate {template.metadata.name!r} spec.inputSchema"
        for fpath, message in schema_and_instances(template.spec.input_schema, ["<schema>"], [(merged, [*path])]):
            if fpath and fpath[0] == "<schema>":
                findings.append(([*path], f"{where} is not valid: {message}"))
            else:
                findings.append((fpath, f"{message} ({where})"))
    return findings


def resolve_spec(spec: WorkflowSpec, template: WorkflowTemplate) -> WorkflowSpec:
    """The template's spec with the Workflow's inputs over its defaults and the Workflow's run controls."""
    update: dict[str, Any] = {"inputs": {**template.spec.inputs, **spec.inputs}}
    for field in _RUN_CONTROLS:
        if field in spec.model_fields_set:
            update[field] = getattr(spec, field)
    return template.spec.model_copy(update=update)


def resolve_workflow(workflow: Workflow, templates: Mapping[str, WorkflowTemplate]
                     ) -> tuple[Workflow | None, list[Finding]]:
    """The full Workflow (itself when it names no template), or None and why not (findings on its fields)."""
    ref = workflow.spec.workflow_template_ref
    if ref is None:
        return workflow, []
    template = templates.get(ref.name)
    if template is None:
        known = known_names(templates, "WorkflowTemplates")
        return None, [(["spec", "workflowTemplateRef", "name"], f"unknown WorkflowTemplate {ref.name!r}; {known}")]
    findings = template_input_findings(template, workflow.spec.inputs)
    if findings:
        return None, findings
    return workflow.model_copy(update={"spec": resolve_spec(workflow.spec, template)}), []
