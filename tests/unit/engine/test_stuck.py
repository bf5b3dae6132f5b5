"""Runs that can no longer move end at once, Failed, naming what is stuck; runs that only wait do not.

Validation refuses the shapes that get stuck (a step depending on an exit handler); the engine still ends any
run that gets there, so no driver waits forever. Virtual time.
"""

from __future__ import annotations

from agentflow.engine.run import Run
from agentflow.engine.values import EventType

from .harness import Harness, fail, ok, plan

DEPENDS_ON_HANDLER = """
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: h, kind: tool, tool: t, runOn: failure}
  - {name: b, kind: tool, tool: t, dependsOn: [h]}
  - {name: c, kind: tool, tool: t, dependsOn: [b]}
"""


def test_a_step_waiting_for_an_exit_handler_fails_the_run_naming_the_stuck_steps() -> None:
    h = Harness(plan(DEPENDS_ON_HANDLER), start=0.0)
    run = h.run_until_blocked()
    assert run.finished and run.phase == "Failed"
    assert run.stuck == ("h", "b", "c")
    assert run.reason is not None and run.reason.startswith("stuck: h, b, c can never finish")
    finished = h.events[-1]
    assert finished.type is EventType.run_finished and finished.data["stuck"] == ["h", "b", "c"]
    assert Run.resume(h.plan, "run-1", h.events).stuck == ("h", "b", "c")  # replayed exactly


def test_the_same_when_the_run_failed_and_the_handler_would_run() -> None:
    h = Harness(plan(DEPENDS_ON_HANDLER), lambda r: fail("Boom", retryable=False), start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Failed" and run.stuck  # h waits for b (not finished), b for h


def test_a_stuck_run_with_a_timeout_does_not_wait_for_it() -> None:
    h = Harness(plan(DEPENDS_ON_HANDLER.replace("spec:\n", "spec:\n  timeoutSeconds: 86400\n")), start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Failed" and run.stuck and h.now < 100


def test_waiting_for_a_human_a_retry_or_a_parallelism_slot_is_not_stuck() -> None:
    approval = Harness(plan("spec:\n  steps:\n  - {name: gate, kind: approval}\n"), start=0.0)
    run = approval.run_until_blocked()
    assert not run.finished and run.nodes["gate"].phase == "Waiting"
    approval.now += 10 * 86400
    assert not approval.decide().finished
    retry = Harness(plan("""
spec:
  steps:
  - {name: s, kind: tool, tool: t, retry: {limit: 1, backoff: {initialSeconds: 3600}}}
"""), lambda r: fail() if r.attempt == 1 else ok("fine"), start=0.0)
    assert retry.run_until_blocked().phase == "Succeeded"
    narrow = Harness(plan("spec:\n  parallelism: 1\n" + "".join(
        ["  steps:\n"] + [f"  - {{name: s{i}, kind: tool, tool: t}}\n" for i in range(5)])), start=0.0)
    assert narrow.run_until_blocked().phase == "Succeeded"


def test_a_quota_that_lets_nothing_start_is_not_stuck() -> None:
    h = Harness(plan("spec:\n  steps:\n  - {name: s, kind: tool, tool: t}\n"), start=0.0)
    decision = h.run.decide(0.0, capacity=0)
    assert not decision.finished and not decision.start
    assert not h.run.decide(5.0, capacity=0).finished


def test_a_suspended_run_is_not_stuck() -> None:
    h = Harness(plan("spec:\n  steps:\n  - {name: s, kind: tool, tool: t}\n"), start=0.0)
    h.post(EventType.suspended, by="ops")
    assert not h.decide().finished
    h.post(EventType.resumed, by="ops")
    assert h.run_until_blocked().phase == "Succeeded"
