"""Quarantine review: an attempt whose untrusted input was quarantined waits for a human like an approval step.

Approved, the node runs again, that attempt's StepScheduled and StepRequest saying ``screening: flag``;
rejected, it fails with Rejected. Virtual time throughout.
"""

from __future__ import annotations

import pytest

from agentflow.engine.run import Run
from agentflow.engine.values import EventType, StepRequest, StepResult

from .harness import Harness, fail, ok, plan

DAG = """
spec:
  steps:
  - {name: fetch, kind: tool, tool: web, timeoutSeconds: 30, retry: {limit: 3}}
  - {name: answer, kind: tool, tool: t, dependsOn: [fetch], inputs: {page: "${{ steps.fetch.output }}"}}
"""

QUARANTINED = ("InjectionQuarantined", "tool 'web' output quarantined for review: score 0.94; evidence: "
                                       "ignore-instructions (instruction_override): 'IGNORE ALL PREVIOUS'")


def quarantine_first(request: StepRequest) -> tuple[float, StepResult]:
    if request.node == "fetch" and request.screening is None:
        return fail(*QUARANTINED, retryable=False)
    return ok({"node": request.node, "screening": request.screening})


def reviewing(text: str = DAG) -> Harness:
    h = Harness(plan(text), quarantine_first, start=0.0)
    h.run_until_blocked()
    return h


def test_a_quarantined_attempt_waits_for_a_review_with_the_evidence() -> None:
    h = reviewing()
    node = h.run.nodes["fetch"]
    assert node.phase == "Waiting" and node.attempt == 1 and not h.run.finished
    [request] = [e for e in h.events if e.type is EventType.approval_requested]
    assert request.data["review"] == {"attempt": 1, "error": {"type": "InjectionQuarantined",
                                                              "message": QUARANTINED[1], "retryable": False}}
    assert "IGNORE ALL PREVIOUS" in request.data["message"] and request.data["deadline"] is None
    assert h.types("fetch") == ["StepScheduled", "StepFailed", "ApprovalRequested"]
    assert h.executed == [("fetch", 1)]  # not retried, although retry.limit is 3


def test_approved_the_node_runs_again_with_its_screening_flagged() -> None:
    h = reviewing()
    h.post(EventType.approval_decided, "fetch", approved=True, by="alice", reason="a quoted phishing mail")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert h.executed == [("fetch", 1), ("fetch", 2), ("answer", 1)]
    second = [r for r in h.requests if r.node == "fetch"][1]
    assert second.screening == "flag" and second.attempt == 2
    scheduled = [e for e in h.events if e.type is EventType.step_scheduled and e.node == "fetch"]
    assert [e.data.get("screening") for e in scheduled] == [None, "flag"]
    answer = next(r for r in h.requests if r.node == "answer")
    assert answer.screening is None  # the override is for the reviewed attempt only
    assert run.nodes["fetch"].output == {"node": "fetch", "screening": "flag"}


def test_rejected_the_node_fails_with_rejected() -> None:
    h = reviewing()
    h.post(EventType.approval_decided, "fetch", approved=False, by="bob", reason="a real attack")
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.nodes["fetch"].error is not None and run.nodes["fetch"].error.type == "Rejected"
    assert run.reason == "step fetch: Rejected: quarantined input rejected by bob: a real attack"
    assert h.executed == [("fetch", 1)]


def test_the_attempts_timeout_does_not_fire_during_the_review() -> None:
    h = reviewing()
    h.now += 3600  # far past the attempt's 30 s deadline
    h.decide()
    assert h.run.nodes["fetch"].phase == "Waiting"
    assert "StepTimedOut" not in h.types("fetch")


def test_resume_mid_review_waits_and_takes_the_decision_exactly() -> None:
    h = reviewing()
    resumed = Harness(h.plan, quarantine_first, start=h.now, events=list(h.events))
    assert resumed.run.nodes["fetch"].phase == "Waiting"
    assert resumed.decide().events == ()  # nothing asked twice
    resumed.post(EventType.approval_decided, "fetch", approved=True, by="alice")
    assert resumed.run_until_blocked().phase == "Succeeded"
    # replaying the whole journal gives the same run
    again = Run.resume(h.plan, "run-1", resumed.events)
    assert again.phase == "Succeeded" and again.nodes["fetch"].attempt == 2


def test_a_crash_between_the_result_and_the_request_asks_once_on_resume() -> None:
    h = Harness(plan(DAG), quarantine_first, start=0.0)
    for _ in range(10):  # until the quarantined result is in, before the decision that asks for the review
        h.step()
        if "StepFailed" in h.types("fetch"):
            break
    assert "ApprovalRequested" not in h.types("fetch")
    resumed = Harness(h.plan, quarantine_first, start=h.now, events=list(h.events))
    resumed.run_until_blocked()
    assert resumed.types("fetch").count("ApprovalRequested") == 1


def test_cancel_during_the_review_cancels_the_node() -> None:
    h = reviewing()
    h.post(EventType.cancel_requested, by="carol")
    run = h.run_until_blocked()
    assert run.phase == "Cancelled" and run.nodes["fetch"].phase == "Cancelled"


@pytest.mark.parametrize("shape", ["fan-out", "state machine"])
def test_reviews_work_for_fan_out_items_and_state_visits(shape: str) -> None:
    text = """
spec:
  inputs: {urls: [a, b]}
  steps:
  - {name: fetch, kind: tool, tool: web, forEach: inputs.urls, inputs: {u: "${{ item }}"}}
""" if shape == "fan-out" else """
spec:
  stateMachine:
    initial: fetch
    states:
    - {name: fetch, step: {name: f, kind: tool, tool: web}, transitions: [{target: done}]}
    - {name: done, final: Succeeded}
"""

    def quarantined(request: StepRequest) -> tuple[float, StepResult]:
        if request.screening is None and request.node in ("fetch[1]", "fetch#1"):
            return fail(*QUARANTINED, retryable=False)
        return ok(request.node)

    h = Harness(plan(text), quarantined, start=0.0)
    h.run_until_blocked()
    node = "fetch[1]" if shape == "fan-out" else "fetch#1"
    assert h.run.nodes[node].phase == "Waiting"
    h.post(EventType.approval_decided, node, approved=True, by="alice")
    assert h.run_until_blocked().phase == "Succeeded"


def test_the_screening_override_travels_with_the_request() -> None:
    request = StepRequest("r", "fetch", "fetch", "tool", 2, {}, None, "flag")
    assert StepRequest.from_dict(request.to_dict()) == request
    with pytest.raises(ValueError, match="screening must be null or 'flag'"):
        StepRequest.from_dict({**request.to_dict(), "screening": "off"})
