"""A delivery mapped to a run: CEL over body and headers, the delivery id, `when`, errors naming the field; the
trigger's checks at admission; the Workflow's deterministic name (all pure)."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.k8s.trigger import delivery_of, workflow_body, workflow_name
from agentflow.models import Catalog, ManifestError, WorkflowTemplate, WorkflowTrigger, parse_resource
from agentflow.validation import validate_body
from agentflow.validation.triggers import MappingError, TriggerSpecError, compile_trigger, trigger_findings


def trigger(**spec: Any) -> WorkflowTrigger:
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
            "metadata": {"name": "github-issues", "namespace": "team", "uid": "u-1"},
            "spec": {"workflowTemplateRef": {"name": "triage"}, "auth": {"hmac": {"secretRef": {"name": "gh"}}},
                     **spec}}
    resource = parse_resource(body)
    assert isinstance(resource, WorkflowTrigger)
    return resource


ISSUE = {"action": "opened", "issue": {"number": 7, "title": "It crashes", "labels": [{"name": "bug"}]}}
HEADERS = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "X-GitHub-Event": "issues"}


def test_inputs_are_cel_over_the_body_and_lower_cased_headers() -> None:
    t = trigger(inputs={"title": "body.issue.title", "number": "body.issue.number",
                        "event": "headers['x-github-event']",
                        "labels": "body.issue.labels.map(l, l.name)"})
    delivery = compile_trigger(t.spec).deliver(ISSUE, HEADERS)
    assert delivery.id == "72d3162e-cc78-11e3-81ab-4c9367dc0958" and delivery.accepted
    assert delivery.inputs == {"title": "It crashes", "number": 7, "event": "issues", "labels": ["bug"]}


def test_when_false_accepts_without_evaluating_the_inputs() -> None:
    t = trigger(when="body.action == 'opened'", inputs={"title": "body.missing.title"})
    delivery = compile_trigger(t.spec).deliver({**ISSUE, "action": "closed"}, HEADERS)
    assert not delivery.accepted and delivery.inputs is None and delivery.id == HEADERS["X-GitHub-Delivery"]


@pytest.mark.parametrize("spec, body, field, reason", [
    ({"inputs": {"title": "body.issue.name"}}, ISSUE, "spec.inputs.title", "no such key: 'name'"),
    ({"inputs": {"n": "body.issue.number / 0"}}, ISSUE, "spec.inputs.n", "divi"),
    ({"when": "body.issue"}, ISSUE, "spec.when", "must give true or false"),
    ({"deliveryId": "body.id"}, ISSUE, "spec.deliveryId", "no such key"),
    ({"deliveryId": "body.issue"}, ISSUE, "spec.deliveryId", "a string or a whole number"),
    ({"deliveryId": "'a\\nb'"}, ISSUE, "spec.deliveryId", "no control characters"),
    ({"deliveryId": "'x' * 1"}, ISSUE, "spec.deliveryId", None),
])
def test_a_mapping_that_fails_names_its_field(spec: dict[str, Any], body: Any, field: str,
                                              reason: str | None) -> None:
    compiled = compile_trigger(trigger(**spec).spec)
    if reason is None:  # CEL has no string repetition: that one fails too, naming the field
        with pytest.raises(MappingError) as caught:
            compiled.deliver(body, HEADERS)
        assert caught.value.field == field
        return
    with pytest.raises(MappingError, match=reason) as caught:
        compiled.deliver(body, HEADERS)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")


def test_a_failure_after_the_id_carries_the_id() -> None:
    with pytest.raises(MappingError) as caught:
        compile_trigger(trigger(inputs={"x": "body.nope"}).spec).deliver(ISSUE, HEADERS)
    assert caught.value.delivery_id == HEADERS["X-GitHub-Delivery"]


def test_the_delivery_id_defaults_to_known_headers_and_is_required() -> None:
    compiled = compile_trigger(trigger().spec)
    assert compiled.deliver({}, {"X-Request-Id": "r-1"}).id == "r-1"
    assert compiled.deliver({}, {"Idempotency-Key": "k", "X-GitHub-Delivery": "g"}).id == "g"
    assert compiled.deliver({}, {"webhook-id": "msg_1", "X-Request-Id": "r"}).id == "msg_1"  # Standard Webhooks
    with pytest.raises(MappingError, match="the delivery has no id: send one of the headers webhook-id, x-github"):
        compiled.deliver({}, {})
    from_body = compile_trigger(trigger(deliveryId="body.event_id").spec)
    assert from_body.deliver({"event_id": 991}, {}).id == "991"
    with pytest.raises(MappingError, match="1 to 256 characters"):
        from_body.deliver({"event_id": "x" * 257}, {})


@pytest.mark.parametrize("spec, field, reason", [
    ({"inputs": {"a": "body.("}}, "spec.inputs.a", "invalid expression"),
    ({"inputs": {"a": "inputs.topic"}}, "spec.inputs.a", "unknown name 'inputs'; trigger expressions can read "
                                                         "body, headers"),
    ({"when": "steps.a.output"}, "spec.when", "unknown name 'steps'"),
    ({"deliveryId": "size(body) +"}, "spec.deliveryId", "invalid expression"),
])
def test_expressions_are_checked_when_compiled(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(TriggerSpecError, match=reason) as caught:
        compile_trigger(trigger(**spec).spec)
    assert caught.value.field == field


TEMPLATE = parse_resource({
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "triage"},
    "spec": {"inputs": {"title": ""}, "inputSchema": {"type": "object", "properties": {"title": {"type": "string"}},
                                                      "additionalProperties": False},
             "steps": [{"name": "s", "kind": "tool", "tool": "echo"}]}})


def test_admission_names_bad_expressions_unknown_templates_and_undeclared_inputs() -> None:
    assert isinstance(TEMPLATE, WorkflowTemplate)
    catalog = Catalog(templates={"triage": TEMPLATE})
    assert trigger_findings(trigger(inputs={"title": "body.issue.title"}), catalog) == []
    findings = trigger_findings(trigger(inputs={"colour": "body.x", "title": "body.("}, when="nope"), catalog)
    assert [(".".join(map(str, p)), m.split(";")[0]) for p, m in findings] == [
        ("spec.inputs.title", "invalid expression 'body.(': syntax error at column 6: unexpected '('"),
        ("spec.when", "expression 'nope': unknown name 'nope'"),
        ("spec.inputs.colour", "WorkflowTemplate 'triage' has no input 'colour'"),
    ]
    missing = trigger_findings(trigger(), Catalog())
    assert missing == [(["spec", "workflowTemplateRef", "name"],
                        "unknown WorkflowTemplate 'triage'; there are no WorkflowTemplates")]


def test_validate_body_reports_trigger_problems() -> None:
    body = trigger(inputs={"a": "body.("}).model_dump(by_alias=True, exclude_none=True)
    problems = validate_body(body)
    assert [p.path for p in problems] == ["spec.inputs.a"]


def test_the_model_refuses_long_names_and_a_missing_scheme() -> None:
    with pytest.raises(ManifestError, match="at most 46 characters"):
        parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
                        "metadata": {"name": "t" * 47},
                        "spec": {"workflowTemplateRef": {"name": "x"},
                                 "auth": {"bearer": {"secretRef": {"name": "s"}}}}})
    with pytest.raises(ManifestError, match="exactly one of hmac, slack, standard, bearer"):
        parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
                        "metadata": {"name": "t"}, "spec": {"workflowTemplateRef": {"name": "x"}, "auth": {}}})


def test_a_delivery_always_gets_the_same_workflow_name_and_body() -> None:
    name = workflow_name("github-issues", "72d3162e")
    assert name == workflow_name("github-issues", "72d3162e") != workflow_name("github-issues", "72d3162f")
    assert name.startswith("github-issues-") and len(name) == len("github-issues") + 17
    assert len(workflow_name("t" * 46, "x")) == 63
    body = workflow_body(trigger(), "72d3162e", {"title": "It crashes"}, "team")
    assert body == {
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": "team",
                     "labels": {"agentflow.dev/trigger": "github-issues", "app.kubernetes.io/managed-by": "agentflow"},
                     "annotations": {"agentflow.dev/delivery-id": "72d3162e"},
                     "ownerReferences": [{"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
                                          "name": "github-issues", "uid": "u-1", "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"workflowTemplateRef": {"name": "triage"}, "inputs": {"title": "It crashes"}},
    }
    assert delivery_of(body, "github-issues") == "72d3162e"
    assert delivery_of(body, "another-trigger") is None
