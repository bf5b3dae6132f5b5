"""A workflow step's child Workflow, read back: whose it is, its depth, what its end means for the step, and what
the parent's status shows of it (k8s.subworkflow; the body itself is a case: cases/child-workflow-*.yaml)."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.engine.values import EventType
from agentflow.k8s import names, subworkflow


def child(phase: str | None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "wf-sub-a1-0000", "labels": {names.ATTEMPT_LABEL: "1"},
                         "annotations": {names.NODE_ANNOTATION: "sub"},
                         "ownerReferences": [{"uid": "parent-uid", "controller": True}]},
            "status": {**({"phase": phase} if phase else {}), **status}}


def test_a_running_child_says_nothing_and_a_finished_one_ends_the_attempt_with_its_cost_first() -> None:
    assert subworkflow.child_events("sub", 1, child(None), 5.0) == []
    assert subworkflow.child_events("sub", 1, child("Running", costUsd=0.1), 5.0) == []
    cost, ok = subworkflow.child_events("sub", 1, child("Succeeded", costUsd=0.4, outputs={"a": 1}), 5.0)
    assert cost.type is EventType.cost_recorded and cost.data["call"]["kind"] == "workflow"
    assert cost.data["call"]["cost_usd"] == 0.4 and cost.data["call"]["name"] == "wf-sub-a1-0000"
    assert ok.type is EventType.step_succeeded and ok.data["output"] == {"a": 1} and ok.data["costUsd"] == 0.4


@pytest.mark.parametrize(("phase", "error", "retryable"), [("Failed", "SubWorkflowFailed", True),
                                                           ("Cancelled", "SubWorkflowCancelled", False)])
def test_a_child_that_did_not_succeed_fails_the_attempt_saying_why(phase: str, error: str, retryable: bool) -> None:
    _, failed = subworkflow.child_events("sub", 1, child(phase, message="step draft: boom"), 5.0)
    assert failed.type is EventType.step_failed
    assert failed.data["error"]["type"] == error and failed.data["error"]["retryable"] is retryable
    assert "wf-sub-a1-0000" in failed.data["error"]["message"] and "boom" in failed.data["error"]["message"]


def test_only_the_child_the_attempt_made_is_taken_for_it() -> None:
    assert subworkflow.is_child_of(child("Running"), "parent-uid", "sub", 1)
    assert not subworkflow.is_child_of(child("Running"), "another-uid", "sub", 1)
    assert not subworkflow.is_child_of(child("Running"), "parent-uid", "sub", 2)
    assert not subworkflow.is_child_of(child("Running"), "parent-uid", "other", 1)
    unowned = child("Running")
    unowned["metadata"]["ownerReferences"] = [{"uid": "parent-uid"}]  # not the controller
    assert not subworkflow.is_child_of(unowned, "parent-uid", "sub", 1)


def test_depth_comes_from_the_label_and_a_bad_label_is_an_error() -> None:
    assert subworkflow.depth_of({"metadata": {}}) == 0
    assert subworkflow.depth_of({"metadata": {"labels": {subworkflow.DEPTH_LABEL: "3"}}}) == 3
    for bad in ("x", "-1"):
        with pytest.raises(ValueError, match=subworkflow.DEPTH_LABEL):
            subworkflow.depth_of({"metadata": {"labels": {subworkflow.DEPTH_LABEL: bad}}})


def test_the_status_shows_each_steps_latest_child_and_none_when_none_was_made() -> None:
    nodes = {"seen": (1, "Running", None), "done": (1, "Succeeded", None),
             "retry": (2, "Retrying", "SubWorkflowFailed"),
             "stopped": (1, "Cancelled", None), "deep": (1, "Failed", "WorkflowDepthExceeded"),
             "new": (1, "Running", None), "never": (0, "Pending", None)}
    got = subworkflow.child_statuses(nodes, "wf", {"seen": "Waiting"})
    assert got == {
        "seen": {"name": subworkflow.child_name("wf", "seen", 1), "phase": "Waiting"},
        "done": {"name": subworkflow.child_name("wf", "done", 1), "phase": "Succeeded"},
        "retry": {"name": subworkflow.child_name("wf", "retry", 2), "phase": "Failed"},
        "stopped": {"name": subworkflow.child_name("wf", "stopped", 1), "phase": "Cancelled"},
        "new": {"name": subworkflow.child_name("wf", "new", 1), "phase": "Pending"},
    }
