"""Which watch events wake a Workflow's daemon: not the echo of the operator's own status patches (issue 17)."""

from __future__ import annotations

import copy
from typing import Any

from agentflow.controller.handlers import pod_wakes, workflow_wake_key
from agentflow.k8s import names

WORKFLOW: dict[str, Any] = {"metadata": {"name": "wf", "uid": "u", "generation": 1, "annotations": {}},
                            "spec": {"steps": []}, "status": {"phase": "Running", "nodes": {"a": {"phase": "Running"}}}}


def changed(**edits: Any) -> dict[str, Any]:
    body = copy.deepcopy(WORKFLOW)
    for path, value in edits.items():
        where = body
        *parents, leaf = path.split("__")
        for key in parents:
            where = where.setdefault(key, {})
        where[leaf] = value
    return body


def test_the_operators_own_status_progress_wakes_nothing() -> None:
    progress = changed(status__nodes={"a": {"phase": "Succeeded"}}, status__progress="1/1")
    assert workflow_wake_key(progress) == workflow_wake_key(WORKFLOW)


def test_spec_approvals_deletion_and_the_phase_wake_the_run() -> None:
    key = workflow_wake_key(WORKFLOW)
    for body in (changed(metadata__generation=2),
                 changed(metadata__annotations={names.APPROVE_ANNOTATION: "ask"}),
                 changed(metadata__annotations={names.REJECT_ANNOTATION: "ask"}),
                 changed(metadata__deletionTimestamp="2026-12-07T00:00:00Z"),
                 changed(status__phase="Succeeded")):  # a finished run's TTL counts from it (services.retention)
        assert workflow_wake_key(body) != key, body


def pod(phase: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", **meta}, "status": {"phase": phase}}


def test_a_pod_wakes_its_run_when_it_ended_or_goes_not_when_it_starts() -> None:
    assert not pod_wakes(pod("Pending"), "ADDED") and not pod_wakes(pod("Running"), "MODIFIED")
    assert pod_wakes(pod("Succeeded"), "MODIFIED") and pod_wakes(pod("Failed"), "MODIFIED")
    assert pod_wakes(pod("Running"), "DELETED")
    assert pod_wakes(pod("Running", deletionTimestamp="2026-12-07T00:00:00Z"), "MODIFIED")
