"""The cluster console acts as each caller: RBAC decides, and a refusal reaches the page in the API server's words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentflow.console.app import Settings, build_app
from agentflow.console.cluster import ClusterRunSource, status_views
from agentflow.k8s.kube import ApiServer
from agentflow.testing import FakeKube, RbacKube

WORKFLOW = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "support", "namespace": "team-a", "uid": "u1", "labels": {"app": "support"},
                 "creationTimestamp": "2026-12-01T10:00:00Z"},
    "spec": {"steps": [
        {"name": "review", "kind": "approval", "approval": {"message": "ok?"}},
        {"name": "each", "kind": "approval", "dependsOn": ["review"], "forEach": "inputs.xs"},
    ], "inputs": {"xs": [1, 2]}},
    "status": {"phase": "Waiting", "progress": "0/2", "costUsd": 0.25,
               "nodes": {"review": {"phase": "Waiting", "attempts": 1}}},
}
USERS = {
    "viewer-token": ("system:serviceaccount:team-a:viewer", {("get", "workflows"), ("list", "workflows")}),
    "approver-token": ("system:serviceaccount:team-a:approver",
                       {("get", "workflows"), ("list", "workflows"), ("patch", "workflows")}),
}


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[TestClient[Any, Any], FakeKube]]:
    kube = FakeKube(WORKFLOW)

    def connect(token: str) -> RbacKube:
        user, grants = USERS.get(token, ("system:anonymous", set()))
        return RbacKube(kube, user, grants)

    source = ClusterRunSource(ApiServer("https://127.0.0.1:6443"), connect=connect)
    async with TestClient(TestServer(build_app(source, Settings(mode="cluster")))) as c:
        yield c, kube


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_without_a_token_the_console_asks_to_sign_in(cluster: Any) -> None:
    c, _ = cluster
    r = await c.get("/api/runs?namespace=team-a")
    assert r.status == 401 and "bearer token" in (await r.json())["error"]
    assert (await c.get("/api/info")).status == 200


async def test_a_token_that_is_not_a_kubernetes_token_is_401(cluster: Any) -> None:
    c, _ = cluster
    for token in ("\u2603", "caf\u00e9", "two words"):
        r = await c.get("/api/runs?namespace=team-a", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 401 and "bearer token" in (await r.json())["error"]
        r = await c.post("/api/runs/team-a:support/cancel", json={"reason": "x"},
                         headers={"Authorization": f"Bearer {token}"})
        assert r.status == 401


async def test_runs_and_graph_as_the_caller(cluster: Any) -> None:
    c, _ = cluster
    rows = await (await c.get("/api/runs?namespace=team-a", headers=_as("viewer-token"))).json()
    assert [(r["runId"], r["phase"], r["progress"], r["costUsd"]) for r in rows] == [
        ("team-a:support", "Waiting", {"done": 0, "total": 2}, 0.25)]
    g = await (await c.get("/api/runs/team-a:support", headers=_as("viewer-token"))).json()
    assert [(n["id"], n["state"]["phase"]) for n in g["nodes"]] == [("review", "Waiting"), ("each", "Pending")]
    everywhere = await c.get("/api/runs", headers=_as("viewer-token"))
    assert everywhere.status == 403 and "pick one" in (await everywhere.json())["error"]
    stranger = await c.get("/api/runs/team-a:support", headers=_as("someone-else"))
    assert stranger.status == 403
    assert 'User "system:anonymous" cannot get resource "workflows"' in (await stranger.json())["error"]


async def test_rbac_decides_who_may_approve(cluster: Any) -> None:
    c, kube = cluster
    url = "/api/runs/team-a:support/nodes/review/decision"
    refused = await c.post(url, json={"approved": True, "reason": "ok"}, headers=_as("viewer-token"))
    assert refused.status == 403
    message = (await refused.json())["error"]
    assert message.startswith("RBAC refused approving review of workflow team-a/support for "
                              "system:serviceaccount:team-a:viewer")
    assert 'cannot patch resource "workflows"' in message
    assert kube.patches == []
    ok = await c.post(url, json={"approved": True, "reason": "ok"}, headers=_as("approver-token"))
    assert ok.status == 200, await ok.text()
    annotations = kube.resources[("workflows", "team-a", "support")]["metadata"]["annotations"]
    # The console patches as the caller; the operator's mutating webhook writes who decided (the API server's
    # user of this request), so the annotation carries no claim of its own.
    assert annotations == {"agentflow.dev/approve": '{"node":"review","reason":"ok"}'}
    not_waiting = await c.post("/api/runs/team-a:support/nodes/each/decision", json={"approved": True},
                               headers=_as("approver-token"))
    assert not_waiting.status == 409


async def test_a_bad_run_name_says_the_form(cluster: Any) -> None:
    c, _ = cluster
    r = await c.get("/api/runs/support", headers=_as("viewer-token"))
    assert r.status == 400 and "NAMESPACE:NAME" in (await r.json())["error"]


async def test_the_cluster_console_creates_nothing(cluster: Any) -> None:
    c, _ = cluster
    r = await c.post("/api/runs", json={"yaml": "x: 1"}, headers=_as("approver-token"))
    assert r.status == 409 and "kubectl apply" in (await r.json())["error"]


def test_status_views_collapse_items_and_visits() -> None:
    from agentflow.engine.plan import compile_plan
    from agentflow.models import Workflow

    plan = compile_plan(Workflow.model_validate(WORKFLOW))
    views = status_views(plan, {"nodes": {"review": {"phase": "Succeeded"}, "each[0]": {"phase": "Succeeded"},
                                          "each[1]": {"phase": "Running", "costUsd": 0.5}}})
    assert views["review"]["phase"] == "Succeeded"
    assert views["each"]["counts"] == {"Running": 1, "Succeeded": 1} and views["each"]["items"] == 2


def test_status_views_of_a_behavior_tree_show_each_leafs_last_run() -> None:
    from agentflow.engine.plan import compile_plan
    from agentflow.models import Workflow

    tree = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "t"},
            "spec": {"behaviorTree": {"type": "retry", "limit": 2, "child": {
                "type": "step", "step": {"name": "a", "kind": "tool", "tool": "echo"}}}}}
    plan = compile_plan(Workflow.model_validate(tree))
    views = status_views(plan, {"nodes": {"a#1": {"phase": "Failed"}, "a#2": {"phase": "Succeeded"}}})
    assert views["a"]["phase"] == "Succeeded" and views["a"]["visits"] == 2
