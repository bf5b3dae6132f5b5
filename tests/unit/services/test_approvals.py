"""agentflow.services.approvals: the patches `agentflow approve/cancel --namespace` send, and when they refuse."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from agentflow import testing
from agentflow.k8s import names
from agentflow.services import approvals


def wf(phase: str, **nodes: str) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "demo", "namespace": "ns"},
            "status": {"phase": phase, "nodes": {n: {"phase": p} for n, p in nodes.items()}}}


def FakeKube(workflow: dict[str, Any] | None) -> testing.FakeKube:
    return testing.FakeKube(workflow) if workflow is not None else testing.FakeKube()


def test_the_decision_patch_is_what_the_reconciler_reads() -> None:
    for approved, key in ((True, names.APPROVE_ANNOTATION), (False, names.REJECT_ANNOTATION)):
        patch = approvals.decision_patch("review[2]", approved, "looks fine")
        [(got_key, value)] = patch["metadata"]["annotations"].items()
        assert got_key == key
        assert json.loads(value) == {"node": "review[2]", "reason": "looks fine"}
        assert names.parse_decision(key, value) == names.ApprovalAnnotation("review[2]", approved, None,
                                                                            "looks fine")


async def test_decide_patches_a_waiting_step() -> None:
    kube = FakeKube(wf("Waiting", gate="Waiting", ship="Pending"))
    patch = await approvals.decide(kube, "ns", "demo", "gate", approved=True, reason="ok")
    assert kube.patches == [patch]


async def test_a_step_missing_from_a_large_status_is_left_to_the_reconciler() -> None:
    workflow = wf("Waiting", gate="Waiting")
    workflow["status"]["nodeSummary"] = {"total": 5000, "shown": 1}
    kube = FakeKube(workflow)
    await approvals.decide(kube, "ns", "demo", "map[4000]", approved=False)
    assert len(kube.patches) == 1


@pytest.mark.parametrize(("workflow", "node", "message"), [
    (wf("Waiting", gate="Waiting", ship="Pending"), "ship", "step ship of workflow demo is Pending, not Waiting "
                                                            "(waiting: gate)"),
    (wf("Running", ship="Running"), "ship", "is Running, not Waiting (no step waits for approval)"),
    (wf("Waiting", gate="Waiting"), "ship", "step ship of workflow demo does not wait for approval (waiting: gate)"),
    ({"kind": "Workflow", "metadata": {"name": "demo", "namespace": "ns"}}, "gate",
     "does not wait for approval (no step waits for approval)"),
    (wf("Succeeded", gate="Succeeded"), "gate", "workflow demo has finished (Succeeded): nothing to approve"),
    (None, "gate", "no workflow demo in namespace ns"),
])
async def test_decide_refuses_what_cannot_be_decided(workflow: dict[str, Any] | None, node: str,
                                                     message: str) -> None:
    kube = FakeKube(workflow)
    with pytest.raises(approvals.ApprovalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await approvals.decide(kube, "ns", "demo", node, approved=True)
    assert kube.patches == []


async def test_cancel_sets_spec_cancel_unless_finished() -> None:
    kube = FakeKube(wf("Waiting", gate="Waiting"))
    assert await approvals.cancel(kube, "ns", "demo") == {"spec": {"cancel": True}}
    assert kube.patches == [{"spec": {"cancel": True}}]
    with pytest.raises(approvals.ApprovalError, match="has finished"):
        await approvals.cancel(FakeKube(wf("Failed")), "ns", "demo")


# -- stamp and verified: who decided is who asked, and only what the webhook stamped counts

KEY = b"k" * 32
SPEC = {"steps": [
    {"name": "gate", "kind": "approval", "approval": {"approvers": ["alice", "release-managers"]}},
    {"name": "open", "kind": "approval", "approval": {}},
]}


def annotated(key: str, value: str, *, uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": "demo", "uid": uid, "annotations": {key: value}}, "spec": SPEC}


def test_stamp_names_the_requesting_user_whatever_the_annotation_claims() -> None:
    body = annotated(names.APPROVE_ANNOTATION, json.dumps({"node": "gate", "by": "alice", "reason": "ok"}))
    stamped = approvals.stamp(KEY, body, None, "alice", ["system:authenticated"])
    decision = names.parse_decision(names.APPROVE_ANNOTATION, stamped[names.APPROVE_ANNOTATION])
    assert (decision.by, decision.groups, decision.reason) == ("alice", ("system:authenticated",), "ok")
    assert approvals.verified(KEY, "uid-1", decision)


@pytest.mark.parametrize(("username", "groups"), [("bob", ["release-managers"]), ("alice", [])])
def test_an_approver_is_a_user_name_or_a_group(username: str, groups: list[str]) -> None:
    stamped = approvals.stamp(KEY, annotated(names.REJECT_ANNOTATION, "gate"), None, username, groups)
    assert names.parse_decision(names.REJECT_ANNOTATION, stamped[names.REJECT_ANNOTATION]).by == username


def test_someone_who_is_not_an_approver_is_refused_even_claiming_to_be_one() -> None:
    body = annotated(names.APPROVE_ANNOTATION, json.dumps({"node": "gate", "by": "alice"}))
    with pytest.raises(approvals.ApprovalError, match=r"mallory may not decide step gate.*alice, release-managers"):
        approvals.stamp(KEY, body, None, "mallory", ["system:serviceaccounts:team-a"])


def test_a_step_without_approvers_may_be_decided_by_anyone_rbac_lets_approve() -> None:
    stamped = approvals.stamp(KEY, annotated(names.APPROVE_ANNOTATION, "open"), None, "system:serviceaccount:a:b", [])
    assert names.APPROVE_ANNOTATION in stamped


def test_an_unchanged_annotation_is_not_restamped() -> None:
    body = annotated(names.APPROVE_ANNOTATION, "gate")
    assert approvals.stamp(KEY, body, body, "mallory", []) == {}


def test_a_malformed_decision_is_refused_with_the_expected_form() -> None:
    with pytest.raises(approvals.ApprovalError, match="names no node"):
        approvals.stamp(KEY, annotated(names.APPROVE_ANNOTATION, "{}"), None, "alice", [])


def test_verification_fails_for_unsigned_forged_edited_replayed_or_foreign_decisions() -> None:
    stamped = approvals.stamp(KEY, annotated(names.APPROVE_ANNOTATION, "gate"), None, "alice", [])
    good = names.parse_decision(names.APPROVE_ANNOTATION, stamped[names.APPROVE_ANNOTATION])
    assert approvals.verified(KEY, "uid-1", good)
    assert not approvals.verified(KEY, "uid-1", dataclasses.replace(good, sig=None))
    assert not approvals.verified(KEY, "uid-1", dataclasses.replace(good, by="bob"))
    assert not approvals.verified(KEY, "uid-1", dataclasses.replace(good, node="open"))
    assert not approvals.verified(KEY, "uid-1", dataclasses.replace(good, approved=False))
    assert not approvals.verified(KEY, "uid-2", good)  # the same decision on a re-created Workflow
    assert not approvals.verified(b"x" * 32, "uid-1", good)
    assert not approvals.verified(KEY, "uid-1", names.ApprovalAnnotation("gate", True, "alice", sig="0" * 64))


def test_a_request_cannot_add_its_user_to_the_approvers_and_decide_at_once() -> None:
    before = {"metadata": {"name": "demo", "uid": "uid-1", "annotations": {}}, "spec": SPEC}
    after = annotated(names.APPROVE_ANNOTATION, "gate")
    after["spec"] = {"steps": [{"name": "gate", "kind": "approval", "approval": {"approvers": ["mallory"]}}]}
    with pytest.raises(approvals.ApprovalError, match="mallory may not decide"):
        approvals.stamp(KEY, after, before, "mallory", [])


# -- who may approve at all: RBAC's custom verb, asked with a SubjectAccessReview

ALICE = {"username": "alice", "uid": "u-1", "groups": ["runners", "system:authenticated"]}


def test_requested_lists_only_the_decisions_a_request_sets_or_changes() -> None:
    body = annotated(names.APPROVE_ANNOTATION, "gate")
    body["metadata"]["annotations"][names.REJECT_ANNOTATION] = "open"
    assert [(k, d.node) for k, d in approvals.requested(body, None)] == [
        (names.APPROVE_ANNOTATION, "gate"), (names.REJECT_ANNOTATION, "open")]
    assert approvals.requested(body, body) == []
    assert approvals.requested({"metadata": {"annotations": {"other": "x"}}}, None) == []
    with pytest.raises(approvals.ApprovalError, match="names no node"):
        approvals.requested(annotated(names.APPROVE_ANNOTATION, "{}"), None)


def test_the_access_review_asks_for_the_approve_verb_as_the_requesting_user() -> None:
    userinfo = {**ALICE, "extra": {"scopes": ["a", "b"], "single": "x"}}
    review = approvals.access_review("team-a", "ship", userinfo)
    assert review == {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": "alice", "uid": "u-1", "groups": ["runners", "system:authenticated"],
        "extra": {"scopes": ["a", "b"], "single": ["x"]},
        "resourceAttributes": {"namespace": "team-a", "verb": "approve", "group": "agentflow.dev",
                               "resource": "workflows", "subresource": "approval", "name": "ship"}}}
    bare = approvals.access_review("team-a", "", {"username": "bob"})["spec"]
    assert bare == {"user": "bob", "groups": [], "resourceAttributes": {
        "namespace": "team-a", "verb": "approve", "group": "agentflow.dev", "resource": "workflows",
        "subresource": "approval"}}


def test_the_refusal_names_the_verb_the_namespace_and_the_role_that_grants_it() -> None:
    assert approvals.refusal("alice", "team-a", "ship", approvals.AccessDecision(True)) is None
    message = approvals.refusal("alice", "team-a", "ship", approvals.AccessDecision(False, "no RBAC rule"))
    assert message is not None
    assert "alice may not approve or reject steps of workflow team-a/ship" in message
    assert "verb 'approve' on workflows/approval" in message and "(no RBAC rule)" in message
    assert "--clusterrole=agentflow-approver --user=alice -n team-a" in message


async def test_authorize_lets_a_granted_user_or_group_decide_and_refuses_the_rest() -> None:
    kube = testing.FakeKube()
    with pytest.raises(approvals.ApprovalError, match="alice may not approve"):
        await approvals.authorize(kube, "team-a", "ship", ALICE)
    kube.grant("approvers", "team-a", "approve", "workflows/approval")
    with pytest.raises(approvals.ApprovalError, match="alice may not approve"):
        await approvals.authorize(kube, "team-a", "ship", ALICE)
    await approvals.authorize(kube, "team-a", "ship", {**ALICE, "groups": ["approvers"]})
    kube.grant("alice", "team-b", "approve", "workflows/approval")  # another namespace's grant counts not here
    with pytest.raises(approvals.ApprovalError):
        await approvals.authorize(kube, "team-a", "ship", ALICE)
    kube.grant("alice", "team-a", "patch", "workflows")  # patch (what cancels) is not approve
    with pytest.raises(approvals.ApprovalError):
        await approvals.authorize(kube, "team-a", "ship", ALICE)
    kube.grant("alice", "team-a", "approve", "workflows/approval")
    await approvals.authorize(kube, "team-a", "ship", ALICE)
    assert len(kube.access_reviews) == 6


async def test_an_authorizer_that_cannot_answer_refuses_the_decision() -> None:
    kube = testing.FakeKube()
    kube.grant("alice", "team-a", "approve", "workflows/approval")
    kube.access_error = approvals.KubeError("create subjectaccessreview: cannot reach the API server")
    with pytest.raises(approvals.ApprovalError, match=r"cannot check whether alice may approve.*refused.*cannot reach"):
        await approvals.authorize(kube, "team-a", "ship", ALICE)
