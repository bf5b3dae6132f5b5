"""A 7,000-node run (1,999 steps and a fan-out of 5,000: the 2,000 steps a Workflow may have) keeps the page
usable; RBAC's refusal reaches the person in plain words."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from agentflow.console.app import Settings, build_app
from agentflow.console.cluster import ClusterRunSource
from agentflow.k8s.kube import ApiServer
from agentflow.testing import FakeKube, RbacKube, waiting_run

from .conftest import screenshot, serve_app, serve_console


def test_a_2000_step_run_with_a_5000_item_fan_out_stays_responsive(page: Page, tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_id = waiting_run(state, steps=1999, items=5000)
    with serve_console(state) as console:
        page.goto(f"{console.url}/#/runs/{run_id}")
        # Up to 2,000 nodes the page opens on the graph: only the nodes in view are drawn.
        expect(page.locator('[data-testid="graph"]')).to_have_attribute("data-nodes", "2000", timeout=180_000)
        expect(page.locator(".react-flow__node").first).to_be_visible(timeout=180_000)
        drawn = page.locator(".react-flow__node").count()
        assert 0 < drawn < 500, f"only the nodes in view are drawn, not {drawn}"
        expect(page.locator('[data-testid="alert-info"]')).to_contain_text("and 6989 more")
        # The list view is virtualised: only the rows in view are drawn.
        page.click('[data-testid="toggle-view"]')
        node_list = page.locator('[data-testid="node-list"]')
        expect(node_list).to_have_attribute("data-count", "2000", timeout=60_000)
        rows = page.locator('[data-testid="node-list"] .vrow')
        assert 0 < rows.count() < 100, "a virtualised list draws only the rows in view"
        page.locator('[data-testid="node-list"]').evaluate("el => { el.scrollTop = 2000 * 28 }")
        expect(page.locator('[data-testid="node-list"]')).to_contain_text("fan")
        page.locator('[data-testid="node-list"] .vrow', has_text="fan").first.click()
        panel = page.locator('[data-testid="node-panel"]')
        expect(panel).to_contain_text("5000 fan-out items", timeout=30_000)
        assert 0 < page.locator('[data-testid="items"] .vrow').count() < 100
        screenshot(page, "run-7000")


def _cluster_app() -> tuple[object, FakeKube]:
    kube = FakeKube({
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "refund", "namespace": "team-a", "uid": "u1"},
        "spec": {"steps": [{"name": "review", "kind": "approval", "approval": {"message": "Refund $40?"}},
                           {"name": "pay", "kind": "approval", "dependsOn": ["review"]}]},
        "status": {"phase": "Waiting", "progress": "0/2", "nodes": {"review": {"phase": "Waiting", "attempts": 1}}},
    })
    users = {"viewer": ("system:serviceaccount:team-a:viewer", {("get", "workflows"), ("list", "workflows")})}

    def connect(token: str) -> RbacKube:
        user, grants = users.get(token, ("system:anonymous", set()))
        return RbacKube(kube, user, grants)

    return build_app(ClusterRunSource(ApiServer("https://127.0.0.1:6443"), connect=connect),
                     Settings(mode="cluster")), kube


def test_a_forbidden_approval_shows_rbacs_refusal(page: Page) -> None:
    app, kube = _cluster_app()
    with serve_app(app) as url:
        page.goto(f"{url}/#/runs")
        page.fill('[data-testid="token"]', "viewer")
        page.click('[data-testid="signin"]')
        page.fill('[data-testid="filter-namespace"]', "team-a")
        expect(page.locator('[data-testid="run-team-a:refund"]')).to_be_visible()
        page.click('a[href="#/runs/team-a%3Arefund"]')
        page.locator('[data-testid="node-review"]').click()
        page.fill('[data-testid="reason"]', "customer is right")
        page.click('[data-testid="approve"]')
        error = page.locator('[data-testid="decision-error"]')
        expect(error).to_contain_text("RBAC refused approving review of workflow team-a/refund for "
                                      "system:serviceaccount:team-a:viewer")
        expect(error).to_contain_text('cannot patch resource "workflows"')
        assert kube.patches == []
        screenshot(page, "forbidden")


