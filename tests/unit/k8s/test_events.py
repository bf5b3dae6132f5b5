"""Journal events as Kubernetes Events, and the Event bodies."""

from __future__ import annotations

from agentflow.engine.values import Event, EventType
from agentflow.k8s import names
from agentflow.k8s.events import (
    MAX_MESSAGE,
    HeldEvents,
    KubeEvent,
    approval_hint,
    coalesce,
    event_body,
    event_name,
    kubernetes_events,
)
from agentflow.k8s.podspec import Owner
from agentflow.k8s.previews import EVENT_PREVIEW_CHARS

OWNER = Owner("agentflow.dev/v1alpha1", "Workflow", "triage", "uid-1")
E = EventType
SILENT = {E.step_started, E.cost_recorded, E.state_entered}


def _sample(t: EventType) -> Event:
    data = {"attempt": 1, "phase": "Succeeded", "count": 2, "approved": True, "notBefore": 10.0,
            "error": {"type": "X", "message": "y"}}
    return Event(t, "n", data, 0.0)


def test_every_event_type_is_told_or_deliberately_silent() -> None:
    for t in EventType:
        told = kubernetes_events([_sample(t)], workflow="w")
        assert (not told) == (t in SILENT), t


def test_warnings_are_the_things_that_went_wrong() -> None:
    warnings = {t for t in EventType if any(k.type == "Warning" for k in kubernetes_events([_sample(t)]))}
    assert warnings == {E.step_failed, E.retry_scheduled, E.step_timed_out, E.run_timed_out, E.plan_refused}
    failed = Event(E.run_finished, None, {"phase": "Failed", "reason": "step a: X: y"})
    assert kubernetes_events([failed], workflow="w") == [("Warning", "Failed", "workflow w failed: step a: X: y")]
    rejected = Event(E.approval_decided, "gate", {"approved": False, "by": "bob"})
    assert kubernetes_events([rejected])[0][:2] == ("Warning", "Rejected")


def test_the_workflow_name_comes_from_run_started_when_not_given() -> None:
    events = [Event(E.run_started, None, {"workflow": "nightly"}), Event(E.run_finished, None, {"phase": "Cancelled"})]
    assert [k.message for k in kubernetes_events(events)] == ["workflow nightly started", "workflow nightly cancelled"]


def test_the_approval_hint_quotes_node_ids_for_the_shell() -> None:
    hint = approval_hint("w", "review[2]")
    assert f"{names.APPROVE_ANNOTATION}='review[2]'" in hint and f"{names.REJECT_ANNOTATION}='review[2]'" in hint


def test_long_messages_are_cut() -> None:
    long = Event(E.step_failed, "n", {"attempt": 1, "error": {"type": "X", "message": "m" * 5000}})
    (told,) = kubernetes_events([long])
    error = told.message.removeprefix("step n attempt 1 failed: ")
    assert len(error) == EVENT_PREVIEW_CHARS and error.endswith("…") and len(told.message) <= MAX_MESSAGE


def test_event_messages_mask_personal_data_a_step_error_quotes() -> None:
    failed = Event(E.step_failed, "n", {"attempt": 1, "error": {
        "type": "ValueError", "message": "no account for jane.doe@example.com (card 4111 1111 1111 1111)"}})
    (told,) = kubernetes_events([failed])
    assert "jane.doe" not in told.message and "4111" not in told.message
    assert "<EMAIL>" in told.message and "<CARD>" in told.message


def test_the_approval_event_does_not_quote_the_rendered_question() -> None:
    asked = Event(E.approval_requested, "ship", {"message": "Refund 500 EUR to jane.doe@example.com?",
                                                 "approvers": ["leads"]})
    (told,) = kubernetes_events([asked])
    assert "jane" not in told.message and "Refund" not in told.message
    assert "approvers: leads" in told.message and "status.nodes" in told.message


def test_event_body_is_a_core_v1_event_about_the_workflow() -> None:
    body = event_body(OWNER, "ns", "Normal", "StepStarted", "step a attempt 1 started", "2023-11-14T22:13:20Z")
    assert body["involvedObject"] == {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "name": "triage",
                                      "namespace": "ns", "uid": "uid-1"}
    assert (body["type"], body["reason"], body["count"]) == ("Normal", "StepStarted", 1)
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert body["metadata"]["name"].startswith("triage.")


def test_event_names_are_deterministic_and_distinct() -> None:
    a = event_name(OWNER, "StepStarted", "step a", "t1")
    assert a == event_name(OWNER, "StepStarted", "step a", "t1"), "a retried create is AlreadyExists"
    assert len({a, event_name(OWNER, "StepStarted", "step b", "t1"), event_name(OWNER, "StepStarted", "step a", "t2"),
                event_name(OWNER, "StepSucceeded", "step a", "t1")}) == 4


def test_event_names_stay_valid_for_the_longest_workflow_names() -> None:
    owner = Owner("agentflow.dev/v1alpha1", "Workflow", "a" * 199 + "." + "b" * 53, "u")
    name = event_name(owner, "R", "m", "t")
    assert len(name) <= 253 and ".." not in name and name[0].isalnum() and name[-1].isalnum()


def test_a_behavior_tree_timeout_is_told_as_the_tree_nodes() -> None:
    from agentflow.engine.plan import compile_plan
    from agentflow.models import Workflow

    workflow = Workflow.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
                                        "metadata": {"name": "w"}, "spec": {"behaviorTree": {
                                            "type": "timeout", "timeoutSeconds": 30, "child": {
                                                "type": "step", "step": {"name": "a", "kind": "tool", "tool": "t"}}}}})
    told = kubernetes_events([Event(E.step_timed_out, "bt", {"attempt": 1})], workflow="w",
                             plan=compile_plan(workflow))
    assert told == [("Warning", "StepTimedOut", "behavior-tree node bt ran past its 30s timeout: its steps were "
                                                 "cancelled")]


# -- coalescing (issue 17): progress held while a step runs, posted as one Event, in order

def _k(reason: str, message: str, type_: str = "Normal") -> KubeEvent:
    return KubeEvent(type_, reason, message)


STARTED = _k("Started", "workflow w started")
S0_STARTED = _k("StepStarted", "step s0 attempt 1 started")
S0_DONE = _k("StepSucceeded", "step s0 attempt 1 succeeded")
S1_STARTED = _k("StepStarted", "step s1 attempt 1 started")
SUCCEEDED = _k("Succeeded", "workflow w succeeded")


def test_progress_is_held_while_a_step_runs_and_the_end_posts_it_all_as_one_event() -> None:
    posts, held = coalesce(HeldEvents(), [STARTED, S0_STARTED], 100.0, window=10, hold=True)
    assert posts == [] and held == HeldEvents((STARTED, S0_STARTED), 100.0) and held.due(10) == 110.0
    posts, held = coalesce(held, [S0_DONE, SUCCEEDED], 103.0, window=10, hold=False)
    assert posts == [(KubeEvent("Normal", "Succeeded", "workflow w started; step s0 attempt 1 started; "
                                "step s0 attempt 1 succeeded; workflow w succeeded"), 100.0)]
    assert held == HeldEvents()


def test_held_progress_is_posted_once_the_window_passed() -> None:
    _, held = coalesce(HeldEvents(), [STARTED, S0_STARTED], 100.0, window=10, hold=True)
    posts, held = coalesce(held, [S0_DONE, S1_STARTED], 109.0, window=10, hold=True)
    assert posts == [] and held.since == 100.0
    posts, held = coalesce(held, [], 110.0, window=10, hold=True)
    assert [(p.reason, first) for p, first in posts] == [("StepStarted", 100.0)]
    assert posts[0][0].message.count(";") == 3 and held == HeldEvents()


def test_nothing_is_held_when_no_step_runs_or_without_a_window() -> None:
    waiting = _k("WaitingForApproval", "step ask waits for approval")
    posts, held = coalesce(HeldEvents(), [STARTED], 100.0, window=10, hold=False)
    assert posts == [(STARTED, 100.0)] and held == HeldEvents()
    posts, _ = coalesce(HeldEvents(), [STARTED, S0_STARTED], 100.0, window=0, hold=True)
    assert [p.reason for p, _ in posts] == ["StepStarted"]
    posts, held = coalesce(HeldEvents((STARTED,), 95.0), [waiting], 100.0, window=10, hold=True)
    assert posts == [(KubeEvent("Normal", "WaitingForApproval",
                                "workflow w started; step ask waits for approval"), 95.0)]


def test_a_warning_is_posted_by_itself_after_what_was_held() -> None:
    failed = _k("StepFailed", "step s0 attempt 1 failed: Boom: no", "Warning")
    posts, held = coalesce(HeldEvents((STARTED, S0_STARTED), 95.0), [failed, S1_STARTED], 100.0, window=10,
                           hold=True)
    assert posts == [(KubeEvent("Normal", "StepStarted", "workflow w started; step s0 attempt 1 started"), 95.0),
                     (failed, 100.0)]
    assert held == HeldEvents((S1_STARTED,), 100.0)


def test_a_batch_never_grows_past_the_message_limit() -> None:
    many = [_k("StepSucceeded", f"step map[{i}] attempt 1 succeeded") for i in range(200)]
    posts, held = coalesce(HeldEvents(), many, 100.0, window=10, hold=False)
    assert len(posts) > 1 and all(len(p.message) <= MAX_MESSAGE for p, _ in posts)
    told = "; ".join(p.message for p, _ in posts).split("; ")
    assert told == [e.message for e in many] and held == HeldEvents()


def test_a_coalesced_event_says_when_it_began() -> None:
    body = event_body(OWNER, "ns", "Normal", "Succeeded", "a; b", "2026-01-01T00:00:09Z",
                      first_iso="2026-01-01T00:00:00Z")
    assert (body["firstTimestamp"], body["lastTimestamp"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:00:09Z")
