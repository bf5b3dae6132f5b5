"""Retries with backoff, timeouts, cancellation, suspension and approvals."""

from __future__ import annotations

from agentflow.engine.backoff import jitter_fraction, retry_delay
from agentflow.engine.values import EventType, StepRequest
from agentflow.models import Backoff

from .harness import Harness, echo, fail, ok, plan

RETRY = """
spec:
  retry: {limit: 3, backoff: {initialSeconds: 10, factor: 2, maxSeconds: 25, jitter: 0}}
  steps:
  - {name: flaky, kind: tool, tool: t}
"""


def test_retries_with_exponential_backoff_and_cap() -> None:
    attempts: list[float] = []

    def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
        attempts.append(h.now)
        return fail(duration=1.0) if req.attempt < 4 else ok("fine", duration=1.0)

    h = Harness(plan(RETRY), behaviour, start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [a for _, a in h.executed] == [1, 2, 3, 4]
    # failed at 1 -> +10, failed at 12 -> +20, failed at 33 -> +25 (capped)
    assert attempts == [0.0, 11.0, 32.0, 58.0]
    assert h.types("flaky").count("RetryScheduled") == 3


def test_retries_exhausted_fail_the_step() -> None:
    h = Harness(plan(RETRY), lambda r: fail("Flaky", "again"))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.nodes["flaky"].attempt == 4
    assert run.reason == "step flaky: Flaky: again"


def test_non_retryable_errors_are_not_retried() -> None:
    h = Harness(plan(RETRY), lambda r: fail("BadInput", "no", retryable=False))
    assert h.run_until_blocked().phase == "Failed"
    assert h.executed == [("flaky", 1)]


def test_retry_on_filters_error_types() -> None:
    p = plan("""
spec:
  steps:
  - {name: s, kind: tool, tool: t, retry: {limit: 5, retryOn: [RateLimited], backoff: {initialSeconds: 1}}}
""")
    h = Harness(p, lambda r: fail("RateLimited") if r.attempt == 1 else fail("Other"))
    h.run_until_blocked()
    assert h.executed == [("s", 1), ("s", 2)]


def test_jitter_is_deterministic_and_bounded() -> None:
    b = Backoff(initial_seconds=10, factor=2, max_seconds=100, jitter=0.5)
    assert retry_delay(b, 1, seed=1, node="x") == retry_delay(b, 1, seed=1, node="x")
    delays = {retry_delay(b, 1, seed=s, node="x") for s in range(50)}
    assert len(delays) > 40
    assert all(5.0 <= d <= 15.0 for d in delays)
    assert all(-1.0 <= jitter_fraction(s, "n", 1) < 1.0 for s in range(100))
    assert retry_delay(b, 10, seed=3, node="x") <= 100


def test_attempt_timeout_cancels_and_retries() -> None:
    p = plan("""
spec:
  steps:
  - {name: slow, kind: tool, tool: t, timeoutSeconds: 5, retry: {limit: 1, backoff: {initialSeconds: 1, jitter: 0}}}
""")
    h = Harness(p, lambda r: ok("late", duration=60.0) if r.attempt == 1 else ok("quick", duration=1.0), start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert h.cancelled == ["slow"]
    assert run.nodes["slow"].output == "quick"
    assert "StepTimedOut" in h.types("slow")


def test_workflow_timeout_fails_the_run_and_cancels_running_steps() -> None:
    p = plan("""
spec:
  timeoutSeconds: 30
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: b, kind: tool, tool: t, dependsOn: [a]}
  - {name: cleanup, kind: tool, tool: t, runOn: always}
""")
    h = Harness(p, lambda r: ok(duration=100.0) if r.node == "a" else echo(r), start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.reason == "the workflow ran past its 30.0s timeout"
    assert "a" in h.cancelled
    assert run.step_phase("b") == "Cancelled"
    assert [n for n, _ in h.executed] == ["a", "cleanup"]


def test_cancel_stops_everything_but_exit_handlers() -> None:
    p = plan("""
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: b, kind: tool, tool: t, dependsOn: [a]}
  - {name: on-fail, kind: tool, tool: t, runOn: failure}
  - {name: always, kind: tool, tool: t, runOn: always}
""")
    h = Harness(p, lambda r: ok(duration=50.0) if r.node == "a" else echo(r))
    h.decide()
    h.post(EventType.cancel_requested, by="alice", reason="wrong input")
    run = h.run_until_blocked()
    assert run.phase == "Cancelled"
    assert run.reason == "cancelled by alice: wrong input"
    assert h.cancelled == ["a"]
    assert sorted(n for n, _ in h.executed) == ["a", "always", "on-fail"]


def test_suspend_holds_new_steps_until_resumed() -> None:
    p = plan("""
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: b, kind: tool, tool: t, dependsOn: [a]}
""")
    h = Harness(p)
    h.decide()
    h.post(EventType.suspended, by="bob")
    h.run_until_blocked()
    assert [n for n, _ in h.executed] == ["a"]
    assert not h.run.finished
    h.post(EventType.resumed, by="bob")
    assert h.run_until_blocked().phase == "Succeeded"


APPROVAL = """
spec:
  steps:
  - {name: draft, kind: tool, tool: t}
  - name: review
    kind: approval
    dependsOn: [draft]
    approval: {message: "Publish ${{ steps.draft.output.node }}?", approvers: [alice], timeoutSeconds: 3600}
  - {name: publish, kind: tool, tool: t, dependsOn: [review]}
"""


def test_approval_waits_for_a_human_and_records_who_and_why() -> None:
    h = Harness(plan(APPROVAL), start=0.0)
    h.step()
    h.decide()
    assert h.run.nodes["review"].phase == "Waiting"
    requested = next(e for e in h.events if e.type is EventType.approval_requested)
    assert requested.data["message"] == "Publish draft?"
    assert requested.data["approvers"] == ["alice"]
    assert requested.data["deadline"] == 1.0 + 3600
    h.post(EventType.approval_decided, "review", approved=True, by="alice", reason="looks good")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.nodes["review"].output == {"approved": True, "by": "alice", "reason": "looks good"}


def test_rejection_fails_the_step_with_the_reason() -> None:
    h = Harness(plan(APPROVAL))
    h.step()
    h.decide()
    h.post(EventType.approval_decided, "review", approved=False, by="alice", reason="tone is off")
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.reason == "step review: Rejected: rejected by alice: tone is off"
    assert run.step_phase("publish") == "Skipped"


def test_approval_times_out() -> None:
    h = Harness(plan(APPROVAL), start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.nodes["review"].error is not None
    assert run.nodes["review"].error.type == "ApprovalTimeout"
    assert h.now == 3601.0
