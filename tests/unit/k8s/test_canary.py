"""A PromptRollout's status, conditions (kstatus) and Events from a decision."""

from __future__ import annotations

import pytest

from agentflow.k8s.canary import decision_event, rollout_conditions, rollout_status
from agentflow.prompts.canary import Decision


@pytest.mark.parametrize(("phase", "expected"), [
    ("WaitingForEvaluation", {"Ready": "False", "Rollout": "False", "Reconciling": "True"}),
    ("Progressing", {"Ready": "False", "Rollout": "True", "Reconciling": "True"}),
    ("Promoted", {"Ready": "True", "Rollout": "True"}),
    ("Paused", {"Ready": "False", "Rollout": "False", "Stalled": "True"}),
    ("RolledBack", {"Ready": "False", "Rollout": "False", "Stalled": "True"}),
    ("Failed", {"Ready": "False", "Rollout": "False", "Stalled": "True"}),
])
def test_conditions_per_phase(phase: str, expected: dict[str, str]) -> None:
    conds = rollout_conditions(phase, "R", "m", 3, "2026-01-01T00:00:00Z")
    assert {c["type"]: c["status"] for c in conds} == expected
    assert all(c["observedGeneration"] == 3 and c["reason"] == "R" for c in conds)


def test_a_transition_time_is_kept_while_the_status_holds() -> None:
    old = rollout_conditions("Progressing", "Started", "a", 1, "2026-01-01T00:00:00Z")
    again = rollout_conditions("Progressing", "CollectingRuns", "b", 1, "2026-01-01T00:05:00Z", old)
    assert {c["lastTransitionTime"] for c in again} == {"2026-01-01T00:00:00Z"}
    done = rollout_conditions("Promoted", "Promoted", "c", 1, "2026-01-01T00:09:00Z", again)
    times = {c["type"]: c["lastTransitionTime"] for c in done}
    assert times == {"Ready": "2026-01-01T00:09:00Z", "Rollout": "2026-01-01T00:00:00Z"}


def test_a_wait_keeps_the_last_decision_and_a_new_generation_forgets_the_old() -> None:
    start = Decision("Start", "Progressing", 0, 10, "Started", "go", new_step=True)
    first = rollout_status(start, generation=1, now_iso="T1", started_at="T1", step_started_at="T1",
                           candidate_runs=0, stable_runs=0)
    assert first["lastDecision"] == {"action": "Start", "reason": "Started", "message": "go", "at": "T1"}
    wait = Decision("Wait", "Progressing", 0, 10, "CollectingRuns", "2 of 20")
    second = rollout_status(wait, generation=1, now_iso="T2", started_at="T1", step_started_at="T1",
                            candidate_runs=2, stable_runs=9, old={**first, "gates": [{"signal": "x"}]})
    assert second["lastDecision"]["action"] == "Start" and second["gates"] == [{"signal": "x"}]
    assert second["conditions"][1]["message"] == "2 of 20" and second["candidateRuns"] == 2
    newer = rollout_status(wait, generation=2, now_iso="T3", started_at=None, step_started_at=None,
                           candidate_runs=0, stable_runs=0, old=second)
    assert newer["lastDecision"]["action"] == "Wait" and newer["gates"] == []


def test_events() -> None:
    assert decision_event(Decision("Rollback", "RolledBack", 0, 0, "GateFailed", "why")) == (
        "Warning", "RolloutRolledBack", "why")
    assert decision_event(Decision("Advance", "Progressing", 1, 50, "StepPassed", "ok"))[:2] == (
        "Normal", "RolloutAdvanced")
    assert decision_event(Decision("Wait", "WaitingForEvaluation", 0, 0, "WaitingForEvaluation", "m"))[:2] == (
        "Normal", "WaitingForEvaluation")
