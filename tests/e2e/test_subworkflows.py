"""Workflow steps on a real cluster: a parent Workflow whose step runs the quickstart as a WorkflowTemplate gets one
child Workflow (owned by the parent, labelled, in its namespace), the child's outputs as the step's output (the
same as the local runner's), its cost rolled up into the parent's (status and journal); cancelling the parent
cancels a running child, and deleting the parent deletes its children (ownerReferences). Not run in the unit
tier (pytest -m e2e, a cluster)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from agentflow.k8s import subworkflow
from agentflow.storage import PostgresStore

from .conftest import REPO, Cluster
from .test_operator import Operator, load_manifests, local_outputs, wait_finished

pytestmark = pytest.mark.e2e

QUICKSTART = REPO / "examples/manifests/quickstart.yaml"
API = "agentflow.dev/v1alpha1"
WORKFLOWS = "workflows.agentflow.dev"


def support_template() -> list[dict[str, Any]]:
    """The quickstart's Agent, PromptVersions and ToolPolicy, and its Workflow as the WorkflowTemplate ``support``."""
    docs = load_manifests(QUICKSTART)
    out = [d for d in docs if d["kind"] != "Workflow"]
    [run] = [d for d in docs if d["kind"] == "Workflow"]
    out.append({"apiVersion": API, "kind": "WorkflowTemplate", "metadata": {"name": "support"},
                "spec": copy.deepcopy(run["spec"])})
    return out


def parent(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name}, "spec": {"steps": steps, **spec}}


def children(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get_json(WORKFLOWS, "-n", namespace, "-l", f"{subworkflow.PARENT_LABEL}={name}")["items"]
    return sorted(items, key=lambda i: i["metadata"]["name"])


def workflow_costs(dsn: str, uid: str) -> list[dict[str, Any]]:
    """The parent's journaled calls of kind workflow (the children's cost, one per finished child)."""

    async def read() -> list[dict[str, Any]]:
        store = await PostgresStore.connect(dsn)
        try:
            records = await store.load_journal(uid)
        finally:
            await store.close()
        return [dict(r.event.data["call"]) for r in records if r.event.type.value == "CostRecorded"
                and r.event.data.get("call", {}).get("kind") == "workflow"]

    return asyncio.run(read())


def test_a_workflow_step_runs_one_owned_child_and_rolls_up_its_outputs_and_cost(
        cluster: Cluster, operator: Operator, op_namespace: str, postgres_dsn: str, tmp_path: Path) -> None:
    ticket = load_manifests(QUICKSTART)[0]["spec"]["inputs"]["ticket"]
    run = parent("with-child", [{"name": "support", "kind": "workflow", "workflowTemplateRef": {"name": "support"},
                                 "inputs": {"ticket": "${{ inputs.ticket }}"}}], inputs={"ticket": ticket})
    cluster.apply([*support_template(), run], op_namespace)
    wf = wait_finished(cluster, op_namespace, "with-child")
    status = wf["status"]
    assert status["phase"] == "Succeeded", status
    [child] = children(cluster, op_namespace, "with-child")
    meta = child["metadata"]
    assert meta["name"] == subworkflow.child_name("with-child", "support", 1)
    assert meta["namespace"] == op_namespace
    assert [(o["kind"], o["uid"], o.get("controller")) for o in meta["ownerReferences"]] == \
        [("Workflow", wf["metadata"]["uid"], True)]
    assert meta["labels"][subworkflow.DEPTH_LABEL] == "1"
    assert child["status"]["phase"] == "Succeeded"
    # the child's outputs are the step's, and the same as the quickstart run locally
    assert status["outputs"] == {"support": child["status"]["outputs"]}
    assert child["status"]["outputs"] == local_outputs(QUICKSTART, tmp_path)
    node = status["nodes"]["support"]
    assert node["workflow"] == {"name": meta["name"], "phase": "Succeeded"}
    # cost: the child's total is journaled once in the parent, on the step, and in the parent's total
    child_cost = child["status"].get("costUsd", 0.0)
    [call] = workflow_costs(postgres_dsn, wf["metadata"]["uid"])
    assert call["name"] == meta["name"] and call["cost_usd"] == pytest.approx(child_cost)
    assert node.get("costUsd", 0.0) == pytest.approx(child_cost)
    assert status.get("costUsd", 0.0) == pytest.approx(child_cost)


def test_cancelling_the_parent_cancels_its_child_and_deleting_it_deletes_the_child(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    waits = {"apiVersion": API, "kind": "WorkflowTemplate", "metadata": {"name": "waits"},
             "spec": {"steps": [{"name": "hold", "kind": "approval", "approval": {"message": "hold on"}}]}}
    cluster.apply([waits, parent("canceller", [{"name": "sub", "kind": "workflow",
                                                "workflowTemplateRef": {"name": "waits"}}])], op_namespace)
    name = subworkflow.child_name("canceller", "sub", 1)

    def child_waits() -> bool:
        found = children(cluster, op_namespace, "canceller")
        return bool(found) and (found[0].get("status") or {}).get("phase") == "Waiting"

    cluster.wait_until("the child to wait for its approval", child_waits, timeout=180, every=1)
    running = cluster.get_json(WORKFLOWS, "canceller", "-n", op_namespace)["status"]
    assert running["nodes"]["sub"]["workflow"]["name"] == name
    cluster.kubectl("patch", WORKFLOWS, "canceller", "-n", op_namespace, "--type", "merge",
                    "-p", '{"spec": {"cancel": true}}')
    assert wait_finished(cluster, op_namespace, "canceller")["status"]["phase"] == "Cancelled"
    child = wait_finished(cluster, op_namespace, name)
    assert child["spec"]["cancel"] is True and child["status"]["phase"] == "Cancelled"
    cluster.kubectl("delete", WORKFLOWS, "canceller", "-n", op_namespace, "--wait=true")

    def child_gone() -> bool:
        out = cluster.kubectl("get", WORKFLOWS, name, "-n", op_namespace, "--ignore-not-found", "-o", "name",
                              check=False)
        return out.returncode == 0 and not out.stdout.strip()

    cluster.wait_until("the garbage collector to delete the child", child_gone, timeout=120, every=1)
