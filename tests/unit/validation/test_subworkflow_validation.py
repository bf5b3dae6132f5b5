"""Workflow steps in manifests: the step's own fields, its template and inputs checked against the catalog, and
templates that would run themselves refused statically, each error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import (
    Catalog,
    ClusterWorkflowTemplate,
    ManifestError,
    ToolPolicy,
    WorkflowTemplate,
    parse_resource,
)
from agentflow.validation import check_resource

ECHO = {"name": "draft", "kind": "tool", "tool": "echo", "inputs": {"t": "${{ inputs.topic }}"}}


def step(ref: str, kind: str = "WorkflowTemplate", name: str = "sub", **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": "workflow", "workflowTemplateRef": {"name": ref, "kind": kind}, **more}


def template(name: str, *steps: dict[str, Any], kind: str = "WorkflowTemplate", **spec: Any) -> Any:
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": kind, "metadata": {"name": name},
            "spec": {"steps": list(steps) or [ECHO], **spec}}
    return parse_resource(body)


def workflow(*steps: dict[str, Any], **spec: Any) -> Any:
    return parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "run"},
                           "spec": {"steps": list(steps), **spec}})


def catalog_of(*templates: WorkflowTemplate | ClusterWorkflowTemplate) -> Catalog:
    catalog = Catalog()
    catalog.add(ToolPolicy.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy",
                                           "metadata": {"name": "tools"},
                                           "spec": {"tools": [{"name": "echo", "builtin": {"name": "echo"}}]}}))
    for t in templates:
        catalog.add(t)
    return catalog


def messages(findings: list[tuple[list[str | int], str]]) -> dict[str, str]:
    return {".".join(str(p) for p in path): message for path, message in findings}


@pytest.mark.parametrize(("fields", "error"), [
    ({"kind": "workflow"}, "a workflow step needs workflowTemplateRef"),
    ({"kind": "workflow", "workflowTemplateRef": {"name": "t"}, "agentRef": {"name": "a"}}, "has no agentRef"),
    ({"kind": "tool", "tool": "echo", "workflowTemplateRef": {"name": "t"}},
     "workflowTemplateRef is only allowed on workflow steps"),
    ({"kind": "workflow", "workflowTemplateRef": {"name": "t", "kind": "Template"}}, "workflowTemplateRef.kind"),
])
def test_the_step_model_names_what_is_wrong(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ManifestError, match=error):
        workflow({"name": "sub", **fields})


def test_an_unknown_template_and_undeclared_or_unfitting_inputs_name_their_fields() -> None:
    child = template("digest", inputs={"topic": "x"},
                     inputSchema={"type": "object", "properties": {"topic": {"type": "string"}},
                                  "additionalProperties": False})
    cluster = template("shared", kind="ClusterWorkflowTemplate")
    found = messages(check_resource(workflow(
        step("digets"),
        step("digest", name="typo", inputs={"topik": "${{ inputs.x }}"}),
        step("digest", name="wrong", inputs={"topic": 3}),
        step("shared", name="kind"),
        step("digest", name="fine", inputs={"topic": "${{ inputs.x }}"}),
        inputs={"x": "a"}), catalog_of(child, cluster)))
    assert found["spec.steps.0.workflowTemplateRef.name"].startswith("unknown WorkflowTemplate 'digets'")
    assert found["spec.steps.1.inputs.topik"] == ("WorkflowTemplate 'digest' has no input 'topik'; it declares: "
                                                  "topic")
    assert "is not of type 'string'" in found["spec.steps.2.inputs.topic"]
    assert "there is a ClusterWorkflowTemplate 'shared': set kind: ClusterWorkflowTemplate" in \
        found["spec.steps.3.workflowTemplateRef.name"]
    assert not [k for k in found if k.startswith("spec.steps.4")]


def test_a_template_that_runs_itself_is_refused_on_the_reference_naming_the_cycle() -> None:
    own = template("loop", step("loop"))
    assert messages(check_resource(own, catalog_of())) == {
        "spec.steps.0.workflowTemplateRef.name": "workflow steps run templates in a cycle (WorkflowTemplate/loop -> "
        "WorkflowTemplate/loop), which would nest child Workflows until the depth limit; break the cycle"}
    first, second = template("a", step("b")), template("b", ECHO, step("a", name="back"))
    found = messages(check_resource(second, catalog_of(first, second)))
    assert list(found) == ["spec.steps.1.workflowTemplateRef.name"]
    assert "WorkflowTemplate/b -> WorkflowTemplate/a -> WorkflowTemplate/b" in found[
        "spec.steps.1.workflowTemplateRef.name"]


def test_a_workflow_reaching_a_cycle_is_refused_and_a_diamond_is_not_a_cycle() -> None:
    a, b = template("a", step("b")), template("b", step("a"))
    found = messages(check_resource(workflow(step("a")), catalog_of(a, b)))
    assert "cycle" in found["spec.steps.0.workflowTemplateRef.name"]
    top = template("top", step("left"), step("right", name="sub2"))
    left, right, leaf = template("left", step("leaf")), template("right", step("leaf")), template("leaf")
    catalog = catalog_of(top, left, right, leaf)
    assert check_resource(top, catalog) == []
    assert check_resource(workflow(step("top"), step("top", name="again")), catalog) == []


def test_cluster_templates_are_checked_against_cluster_templates_only() -> None:
    shared = template("shared", step("shared", "ClusterWorkflowTemplate"), kind="ClusterWorkflowTemplate")
    assert "cycle" in messages(check_resource(shared, None))["spec.steps.0.workflowTemplateRef.name"]
    # a namespaced template of the same name in one namespace's catalog is not what it runs
    calls_ns = template("caller", step("x"), kind="ClusterWorkflowTemplate")
    assert check_resource(calls_ns, catalog_of(template("x", step("x")))) == []


def test_state_machine_and_tree_leaves_are_searched_for_cycles_too() -> None:
    machine = parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
                              "metadata": {"name": "fsm"}, "spec": {"stateMachine": {"initial": "go", "states": [
                                  {"name": "go", "step": step("fsm"), "transitions": [{"target": "end"}]},
                                  {"name": "end", "final": "Succeeded"}]}}})
    found = messages(check_resource(machine, catalog_of()))
    assert list(found) == ["spec.stateMachine.states.0.step.workflowTemplateRef.name"]
