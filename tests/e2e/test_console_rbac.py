"""The cluster console on a real API server: each person acts with their own token, and RBAC decides.

Two ServiceAccounts in a fresh namespace: `viewer` may get/list Workflows, `approver` may also patch them and
`approve` workflows/approval (what the operator's approval webhook asks RBAC, when one runs). The
console (`agentflow ui --cluster`, its kubeconfig used only for the API server's address and CA) approves a
waiting step for the approver, and shows the viewer RBAC's refusal in the API server's words, over HTTP and on
the page in Debian's Chromium.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster, fresh_namespace
from .test_operator import REPO

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium")


def _rbac(namespace: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for name, verbs in (("viewer", ["get", "list"]), ("approver", ["get", "list", "patch"])):
        rules = [{"apiGroups": ["agentflow.dev"], "resources": ["workflows"], "verbs": verbs}]
        if name == "approver":
            rules.append({"apiGroups": ["agentflow.dev"], "resources": ["workflows/approval"], "verbs": ["approve"]})
        objects += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": f"workflows-{name}", "namespace": namespace}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": f"workflows-{name}", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"workflows-{name}"},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        ]
    return objects


WORKFLOW = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "refund"},
            "spec": {"steps": [{"name": "review", "kind": "approval", "approval": {"message": "Refund $40?"}},
                               {"name": "pay", "kind": "approval", "dependsOn": ["review"]}]}}


@pytest.fixture
def console(cluster: Cluster) -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "ui", "--cluster", "--kubeconfig",
                             cluster.kubeconfig, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("agentflow console on "), f"{line} {proc.stderr.read() if proc.stderr else ''}"
        yield line.rsplit(" ", 1)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _call(url: str, token: str | None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_rbac_decides_who_may_approve_from_the_console(cluster: Cluster, crds: None,
                                                       console: str) -> None:
    with fresh_namespace(cluster, "console-") as ns:
        cluster.apply(_rbac(ns))
        cluster.apply(WORKFLOW, ns)
        status = {"status": {"phase": "Waiting", "progress": "0/2",
                             "nodes": {"review": {"phase": "Waiting", "attempts": 1}}}}
        cluster.kubectl("patch", "workflow", "refund", "-n", ns, "--subresource=status", "--type=merge",
                        "-p", json.dumps(status))
        viewer = cluster.kubectl("create", "token", "viewer", "-n", ns).stdout.strip()
        approver = cluster.kubectl("create", "token", "approver", "-n", ns).stdout.strip()

        code, body = _call(f"{console}/api/runs?namespace={ns}", None)
        assert code == 401, body
        code, rows = _call(f"{console}/api/runs?namespace={ns}", viewer)
        assert code == 200 and [r["runId"] for r in rows] == [f"{ns}:refund"], rows
        code, body = _call(f"{console}/api/runs?namespace=kube-system", viewer)
        assert code == 403 and "cannot list resource" in body["error"], body

        decision = f"{console}/api/runs/{ns}:refund/nodes/review/decision"
        code, body = _call(decision, viewer, {"approved": True, "reason": "customer is right"})
        assert code == 403, body
        assert f"RBAC refused approving review of workflow {ns}/refund for system:serviceaccount:{ns}:viewer" \
            in body["error"]
        assert 'cannot patch resource "workflows"' in body["error"]
        annotations = cluster.get_json("workflow", "refund", "-n", ns)["metadata"].get("annotations") or {}
        assert "agentflow.dev/approve" not in annotations

        _page_shows_the_refusal(console, ns, viewer)

        code, body = _call(decision, approver, {"approved": True, "reason": "customer is right"})
        assert code == 200, body
        assert body["by"] == f"system:serviceaccount:{ns}:approver"
        workflow = cluster.get_json("workflow", "refund", "-n", ns)
        decided = (workflow["metadata"].get("annotations") or {}).get("agentflow.dev/approve")
        # An operator watching this namespace may already have journaled the decision and removed it.
        review = ((workflow.get("status") or {}).get("nodes") or {}).get("review", {})
        assert decided is not None or review.get("phase") == "Succeeded", workflow
        if decided is not None:
            # the console writes {node, reason}; who decided is stamped (and signed) by the operator's webhook
            # from the request's user, never taken from the console's word
            value = json.loads(decided)
            assert {k: value[k] for k in ("node", "reason")} == {"node": "review", "reason": "customer is right"}
            assert value.get("by") in (None, f"system:serviceaccount:{ns}:approver"), value


def _page_shows_the_refusal(console: str, ns: str, token: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (make test does)")
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, viewport={"width": 1400, "height": 860},
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = context.new_page()
            page.goto(f"{console}/#/runs/{ns}:refund")
            page.fill('[data-testid="token"]', token)
            page.click('[data-testid="signin"]')
            page.locator('[data-testid="node-review"]').click()
            page.fill('[data-testid="reason"]', "customer is right")
            page.click('[data-testid="approve"]')
            expect(page.locator('[data-testid="decision-error"]')).to_contain_text(
                f"RBAC refused approving review of workflow {ns}/refund", timeout=30_000)
            artifacts = REPO / ".reports" / "screenshots"
            artifacts.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(artifacts / "cluster-forbidden.png"))
        finally:
            context.close()
