"""Templates and schedules on a real cluster: a Workflow made from a WorkflowTemplate runs like locally and
records the template it ran; a WorkflowSchedule (every minute) starts a run per slot, named by the slot, and
shows it on its status. Not run in the unit tier (pytest -m e2e, a cluster)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster
from .test_operator import (
    REPO,
    Operator,
    load_manifests,
    local_outputs,
    wait_finished,
)

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples/manifests/scheduled-digest.yaml"


def test_a_workflow_from_a_template_runs_like_locally_and_pins_the_template(
        cluster: Cluster, operator: Operator, op_namespace: str, tmp_path: Path) -> None:
    docs = [d for d in load_manifests(EXAMPLE) if d["kind"] != "WorkflowSchedule"]
    cluster.apply(docs, op_namespace)
    wf = wait_finished(cluster, op_namespace, "digest-now")
    status = wf["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"] == local_outputs(EXAMPLE, tmp_path)
    template = cluster.get_json("workflowtemplates.agentflow.dev", "digest", "-n", op_namespace)
    assert status["workflowTemplate"] == {"name": "digest", "kind": "WorkflowTemplate",
                                          "uid": template["metadata"]["uid"],
                                          "generation": template["metadata"]["generation"],
                                          "resourceVersion": status["workflowTemplate"]["resourceVersion"]}
    assert status["templateSpec"]["inputs"]["topic"] == "database upgrades"


def test_a_schedule_starts_one_run_per_slot_and_shows_it(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    docs: list[dict[str, Any]] = []
    for doc in load_manifests(EXAMPLE):
        if doc["kind"] == "Workflow":
            continue
        doc = copy.deepcopy(doc)
        if doc["kind"] == "WorkflowSchedule":
            doc["spec"].update({"schedule": "* * * * *", "concurrencyPolicy": "Forbid"})
        docs.append(doc)
    cluster.apply(docs, op_namespace)
    runs: list[str] = []

    def started() -> bool:
        items = cluster.get_json("workflows.agentflow.dev", "-n", op_namespace,
                                 "-l", "agentflow.dev/schedule=digest-daily")["items"]
        runs[:] = sorted(i["metadata"]["name"] for i in items)
        return bool(runs)

    cluster.wait_until("the schedule to start a run", started, timeout=150, every=2)
    assert all(name.startswith("digest-daily-") and name.split("-")[-1].isdigit() for name in runs)
    wf = wait_finished(cluster, op_namespace, runs[0])
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    schedule = cluster.get_json("workflowschedules.agentflow.dev", "digest-daily", "-n", op_namespace)
    assert schedule["status"]["lastScheduleTime"] and schedule["status"]["nextScheduleTime"]
    assert len(runs) == len(set(runs))
