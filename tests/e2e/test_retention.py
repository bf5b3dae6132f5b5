"""Retention on a real cluster: a finished Workflow with a short spec.ttlSecondsAfterFinished is deleted by the
operator (status.expiresAt first, a TTLExpired Event) and its journal, attempts and results leave PostgreSQL; a
Workflow deleted while the operator was down has its rows collected when the operator starts again, and a live
one keeps its own. Not run in the unit tier (pytest -m e2e, a cluster)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentflow.storage import PostgresStore

from .conftest import Cluster
from .test_operator import (
    REPO,
    Operator,
    load_manifests,
    wait_finished,
)

pytestmark = pytest.mark.e2e

QUICKSTART = REPO / "examples/manifests/quickstart.yaml"


def stored(dsn: str, uid: str) -> tuple[int, int]:
    """(journal records, step results) PostgreSQL holds for the run."""

    async def read() -> tuple[int, int]:
        store = await PostgresStore.connect(dsn)
        try:
            return len(await store.load_journal(uid)), len(await store.get_results(uid))
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_finished_workflow_past_its_ttl_is_deleted_and_its_rows_collected(
        cluster: Cluster, operator: Operator, op_namespace: str, postgres_dsn: str) -> None:
    docs = load_manifests(QUICKSTART, ttlSecondsAfterFinished={"succeeded": 20})
    cluster.apply(docs, op_namespace)
    name = next(d["metadata"]["name"] for d in docs if d["kind"] == "Workflow")
    wf = wait_finished(cluster, op_namespace, name)
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    uid = wf["metadata"]["uid"]
    journal, results = stored(postgres_dsn, uid)
    assert journal > 0 and results > 0

    seen: dict[str, Any] = {"expiresAt": status.get("expiresAt")}

    def deleted() -> bool:  # one read: it may go between two
        out = cluster.kubectl("get", "workflows.agentflow.dev", name, "-n", op_namespace, "--ignore-not-found",
                              "-o", "json")
        if not out.stdout.strip():
            return True
        current = json.loads(out.stdout).get("status") or {}
        if current.get("expiresAt"):
            seen["expiresAt"] = current["expiresAt"]
        return False

    cluster.wait_until(f"workflow {name} to be deleted after its TTL", deleted, timeout=120, every=1)
    assert seen.get("expiresAt"), "status.expiresAt was never shown"
    cluster.wait_until("its rows to be collected", lambda: stored(postgres_dsn, uid) == (0, 0), timeout=30)
    events = cluster.get_json("events", "-n", op_namespace, "--field-selector", f"involvedObject.uid={uid}")["items"]
    expired = [e for e in events if e["reason"] == "TTLExpired"]
    assert expired and "spec.ttlSecondsAfterFinished keeps a Succeeded run 20s" in expired[0]["message"]


def approval_workflow(name: str) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"steps": [{"name": "ok", "kind": "approval", "approval": {"message": "go?"}}]}}


def test_rows_of_a_workflow_deleted_while_the_operator_was_down_are_collected_at_start(
        cluster: Cluster, operator: Operator, op_namespace: str, postgres_dsn: str) -> None:
    cluster.apply([approval_workflow("deleted-meanwhile"), approval_workflow("still-here")], op_namespace)
    uids: dict[str, str] = {}

    def waiting() -> bool:
        for name in ("deleted-meanwhile", "still-here"):
            wf = cluster.get_json("workflows.agentflow.dev", name, "-n", op_namespace)
            uids[name] = wf["metadata"]["uid"]
            if (wf.get("status") or {}).get("phase") != "Waiting":
                return False
        return True

    cluster.wait_until("both to wait for their approval", waiting, timeout=120)
    assert stored(postgres_dsn, uids["deleted-meanwhile"])[0] > 0
    operator.stop()
    try:
        # The operator's finalizer would hold the delete until it is back: removed, as a namespace's teardown or
        # an administrator may do, so the Workflow is gone before the operator sees it go.
        cluster.kubectl("patch", "workflows.agentflow.dev", "deleted-meanwhile", "-n", op_namespace, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}')
        cluster.kubectl("delete", "workflows.agentflow.dev", "deleted-meanwhile", "-n", op_namespace,
                        "--wait=true", "--timeout=60s")
        assert stored(postgres_dsn, uids["deleted-meanwhile"])[0] > 0  # nobody collected it
    finally:
        operator.start()
    cluster.wait_until("the startup sweep to collect its rows",
                       lambda: stored(postgres_dsn, uids["deleted-meanwhile"]) == (0, 0), timeout=120, every=2)
    assert stored(postgres_dsn, uids["still-here"])[0] > 0  # a live Workflow's rows stay
