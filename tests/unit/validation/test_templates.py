"""Workflows made from a WorkflowTemplate or a ClusterWorkflowTemplate: resolution, inputs against the template's
schema, errors naming fields, the kind of the reference."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import (
    Catalog,
    ClusterWorkflowTemplate,
    ManifestError,
    Workflow,
    WorkflowTemplate,
    parse_resource,
)
from agentflow.validation import check_resource, validate_body
from agentflow.validation.templates import resolve_workflow

TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "digest"},
    "spec": {
        "inputs": {"topic": "incidents"},
        "inputSchema": {"type": "object", "properties": {"topic": {"type": "string", "minLength": 3},
                                                         "count": {"type": "integer"}},
                        "additionalProperties": False},
        "steps": [{"name": "draft", "kind": "tool", "tool": "echo", "inputs": {"t": "${{ inputs.topic }}"}}],
        "parallelism": 4,
    },
}


def workflow(**spec: Any) -> Workflow:
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "run-1"},
            "spec": {"workflowTemplateRef": {"name": "digest"}} | spec}
    resource = parse_resource(body)
    assert isinstance(resource, Workflow)
    return resource


def template() -> WorkflowTemplate:
    resource = parse_resource(TEMPLATE)
    assert isinstance(resource, WorkflowTemplate)
    return resource


def catalog_of(*templates: WorkflowTemplate | ClusterWorkflowTemplate) -> Catalog:
    catalog = Catalog()
    for t in templates:
        catalog.add(t)
    return catalog


def cluster_template() -> ClusterWorkflowTemplate:
    resource = parse_resource({**TEMPLATE, "kind": "ClusterWorkflowTemplate"})
    assert isinstance(resource, ClusterWorkflowTemplate)
    return resource


def cluster_ref(**spec: Any) -> Workflow:
    return workflow(**spec, workflowTemplateRef={"name": "digest", "kind": "ClusterWorkflowTemplate"})


def test_a_workflow_gets_the_templates_spec_with_its_inputs_over_the_defaults() -> None:
    resolved, findings = resolve_workflow(workflow(inputs={"count": 2}, suspend=True), catalog_of(template()))
    assert findings == [] and resolved is not None
    assert resolved.spec.inputs == {"topic": "incidents", "count": 2}
    assert [s.name for s in resolved.spec.steps] == ["draft"]
    assert resolved.spec.workflow_template_ref is None
    assert resolved.spec.suspend is True and resolved.spec.parallelism == 4  # run control kept, template's rest
    assert resolved.metadata.name == "run-1"


def test_inputs_are_checked_against_the_templates_schema_naming_the_field() -> None:
    _, findings = resolve_workflow(workflow(inputs={"topic": "ab", "colour": "red"}), catalog_of(template()))
    paths = {".".join(map(str, p)): m for p, m in findings}
    assert "has no input 'colour'" in paths["spec.inputs.colour"]
    _, findings = resolve_workflow(workflow(inputs={"topic": "ab"}), catalog_of(template()))
    assert findings[0][0] == ["spec", "inputs", "topic"] and "too short" in findings[0][1]


def test_an_unknown_template_is_named() -> None:
    resolved, findings = resolve_workflow(workflow(), Catalog())
    assert resolved is None
    assert findings == [(["spec", "workflowTemplateRef", "name"],
                         "unknown WorkflowTemplate 'digest'; there are no WorkflowTemplates")]


def test_a_workflow_from_a_template_may_not_give_steps() -> None:
    with pytest.raises(ManifestError, match="the template gives steps"):
        workflow(steps=[{"name": "x", "kind": "tool", "tool": "echo"}])


def test_a_template_cannot_refer_to_a_template() -> None:
    body = {**TEMPLATE, "spec": {"workflowTemplateRef": {"name": "other"}}}
    with pytest.raises(ManifestError, match="cannot refer to another template"):
        parse_resource(body)


def test_admission_validates_through_the_reference() -> None:
    catalog = Catalog()
    catalog.add(template())
    body = workflow(inputs={"count": "two"}).dump()
    problems = validate_body(body, catalog)
    assert [(p.path, p.source) for p in problems] == [("spec.inputs.count", "Workflow/run-1")]
    assert "is not of type 'integer'" in problems[0].message
    # With good inputs the resolved spec is checked as any Workflow's is (its references against the catalog).
    [problem] = validate_body(workflow(inputs={"count": 2}).dump(), catalog)
    assert problem.path == "spec.steps[0].tool" and problem.message.endswith("(from WorkflowTemplate 'digest')")
    assert validate_body(body, None) == []  # without the namespace's templates only what stands alone


def test_the_templates_own_spec_is_checked() -> None:
    body = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "outputs": {"x": "steps.nope.output"}}}
    findings = check_resource(parse_resource(body), Catalog())
    assert any(p[:2] == ["spec", "outputs"] for p, _ in findings)


def test_a_schedule_names_a_bad_cron_field_time_zone_and_input() -> None:
    catalog = Catalog()
    catalog.add(template())
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowSchedule", "metadata": {"name": "nightly"},
            "spec": {"schedule": "61 * * * *", "timeZone": "Mars/Olympus", "workflowTemplateRef": {"name": "digest"},
                     "inputs": {"topic": 3}}}
    problems = {p.path: p.message for p in validate_body(body, catalog)}
    assert "minute: 61 is outside 0-59" in problems["spec.schedule"]
    assert "unknown time zone 'Mars/Olympus'" in problems["spec.timeZone"]
    assert "is not of type 'string'" in problems["spec.inputs.topic"]


def test_a_workflow_resolves_a_cluster_template_of_that_kind_only() -> None:
    resolved, findings = resolve_workflow(cluster_ref(inputs={"count": 2}), catalog_of(cluster_template()))
    assert findings == [] and resolved is not None
    assert resolved.spec.inputs == {"topic": "incidents", "count": 2} and resolved.spec.parallelism == 4
    # The kinds are apart: a WorkflowTemplate of that name is not a ClusterWorkflowTemplate, nor the other way.
    _, findings = resolve_workflow(cluster_ref(), catalog_of(template()))
    assert findings == [(["spec", "workflowTemplateRef", "name"],
                         "unknown ClusterWorkflowTemplate 'digest' (there is a WorkflowTemplate 'digest': remove "
                         "kind); there are no ClusterWorkflowTemplates")]
    _, findings = resolve_workflow(workflow(), catalog_of(cluster_template()))
    assert findings == [(["spec", "workflowTemplateRef", "name"],
                         "unknown WorkflowTemplate 'digest' (there is a ClusterWorkflowTemplate 'digest': set kind: "
                         "ClusterWorkflowTemplate); there are no WorkflowTemplates")]


def test_a_cluster_templates_inputs_are_checked_naming_the_field_and_the_kind() -> None:
    _, findings = resolve_workflow(cluster_ref(inputs={"colour": "red"}), catalog_of(cluster_template()))
    assert findings[0] == (["spec", "inputs", "colour"], "ClusterWorkflowTemplate 'digest' has no input 'colour'; "
                                                         "it declares: count, topic")


def test_a_reference_of_an_unknown_kind_is_refused_naming_the_field() -> None:
    with pytest.raises(ManifestError) as info:
        workflow(workflowTemplateRef={"name": "digest", "kind": "Template"})
    assert "spec.workflowTemplateRef.kind" in str(info.value)


def test_a_cluster_template_resolves_what_it_names_in_the_workflows_namespace_only() -> None:
    """The catalog is the Workflow's namespace: the Agents and ToolPolicies a cluster template names are looked
    up there, so a namespace without them is refused (naming the field and the template), whatever another holds."""
    team_a = catalog_of(cluster_template())
    [problem] = validate_body(cluster_ref(inputs={"count": 2}).dump(), team_a)
    assert problem.path == "spec.steps[0].tool"
    assert problem.message.endswith("(from ClusterWorkflowTemplate 'digest')")


def test_a_cluster_templates_own_check_uses_no_namespace() -> None:
    """Its references are per namespace: admitting the template itself checks only what stands on its own."""
    good = cluster_template()
    namespace = catalog_of(template())
    assert check_resource(good, namespace) == []
    body = {**TEMPLATE, "kind": "ClusterWorkflowTemplate",
            "spec": {**TEMPLATE["spec"], "outputs": {"x": "steps.nope.output"}}}
    assert any(p[:2] == ["spec", "outputs"] for p, _ in check_resource(parse_resource(body), namespace))
    with pytest.raises(ManifestError, match="a ClusterWorkflowTemplate cannot refer to another template"):
        parse_resource({**body, "spec": {"workflowTemplateRef": {"name": "x"}}})


def test_a_schedule_may_name_a_cluster_template() -> None:
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowSchedule", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 * * * *", "workflowTemplateRef": {"name": "digest",
                                                                     "kind": "ClusterWorkflowTemplate"},
                     "inputs": {"topic": 3}}}
    problems = {p.path: p.message for p in validate_body(body, catalog_of(cluster_template()))}
    assert list(problems) == ["spec.inputs.topic"] and "(ClusterWorkflowTemplate 'digest'" in problems[
        "spec.inputs.topic"]
    problems = {p.path: p.message for p in validate_body(body, catalog_of(template()))}
    assert problems["spec.workflowTemplateRef.name"].startswith("unknown ClusterWorkflowTemplate 'digest'")
