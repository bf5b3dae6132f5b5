"""agentflow.services.approvals: the patches `agentflow approve/cancel --namespace` send, and when they refuse."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import pytest

from agentflow.k8s import names
from agentflow.k8s.kube import Kube, NotFound
from agentflow.services import approvals


class FakeKube:
    def __init__(self, workflow: dict[str, Any] | None) -> None:
        self.workflow = workflow
        self.patches: list[tuple[str, str, str, Mapping[str, Any]]] = []

    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        if self.workflow is None:
            raise NotFound(f"get {plural}/{name}: 404", 404)
        return self.workflow

    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.patches.append((plural, namespace, name, patch))


def wf(phase: str, **nodes: str) -> dict[str, Any]:
    return {"metadata": {"name": "demo"},
            "status": {"phase": phase, "nodes": {n: {"phase": p} for n, p in nodes.items()}}}


def test_the_decision_patch_is_what_the_reconciler_reads() -> None:
    for approved, key in ((True, names.APPROVE_ANNOTATION), (False, names.REJECT_ANNOTATION)):
        patch = approvals.decision_patch("review[2]", approved, "alice", "looks fine")
        [(got_key, value)] = patch["metadata"]["annotations"].items()
        assert got_key == key
        assert json.loads(value) == {"node": "review[2]", "by": "alice", "reason": "looks fine"}
        assert names.parse_decision(key, value) == names.ApprovalAnnotation("review[2]", approved, "alice",
                                                                            "looks fine")


async def test_decide_patches_a_waiting_step() -> None:
    kube = FakeKube(wf("Waiting", gate="Waiting", ship="Pending"))
    patch = await approvals.decide(cast(Kube, kube), "ns", "demo", "gate", approved=True, by="alice", reason="ok")
    assert kube.patches == [("workflows", "ns", "demo", patch)]


async def test_a_step_missing_from_a_large_status_is_left_to_the_reconciler() -> None:
    workflow = wf("Waiting", gate="Waiting")
    workflow["status"]["nodeSummary"] = {"total": 5000, "shown": 1}
    kube = FakeKube(workflow)
    await approvals.decide(cast(Kube, kube), "ns", "demo", "map[4000]", approved=False, by="bob")
    assert len(kube.patches) == 1


@pytest.mark.parametrize(("workflow", "node", "message"), [
    (wf("Waiting", gate="Waiting", ship="Pending"), "ship", "step ship of workflow demo is Pending, not Waiting "
                                                            "(waiting: gate)"),
    (wf("Running", ship="Running"), "ship", "is Running, not Waiting (no step waits for approval)"),
    (wf("Waiting", gate="Waiting"), "ship", "step ship of workflow demo does not wait for approval (waiting: gate)"),
    ({"metadata": {"name": "demo"}}, "gate", "does not wait for approval (no step waits for approval)"),
    (wf("Succeeded", gate="Succeeded"), "gate", "workflow demo has finished (Succeeded): nothing to approve"),
    (None, "gate", "no workflow demo in namespace ns"),
])
async def test_decide_refuses_what_cannot_be_decided(workflow: dict[str, Any] | None, node: str,
                                                     message: str) -> None:
    kube = FakeKube(workflow)
    with pytest.raises(approvals.ApprovalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await approvals.decide(cast(Kube, kube), "ns", "demo", node, approved=True, by="alice")
    assert kube.patches == []


async def test_cancel_sets_spec_cancel_unless_finished() -> None:
    kube = FakeKube(wf("Waiting", gate="Waiting"))
    assert await approvals.cancel(cast(Kube, kube), "ns", "demo") == {"spec": {"cancel": True}}
    assert kube.patches == [("workflows", "ns", "demo", {"spec": {"cancel": True}})]
    with pytest.raises(approvals.ApprovalError, match="has finished"):
        await approvals.cancel(cast(Kube, FakeKube(wf("Failed"))), "ns", "demo")
