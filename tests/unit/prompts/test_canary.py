"""The canary gate of a PromptRollout: the tests with known shifts, minimum samples, the evaluation gate, the
step-by-step decision, and specs that are refused naming their field."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from pydantic import ValidationError

from agentflow.models import OnlineGate, PromptRolloutSpec
from agentflow.prompts.canary import (
    EvaluationState,
    RolloutState,
    Sample,
    VersionStats,
    alpha_of,
    decide,
    evaluation_gate,
    gate_verdict,
    normal_sf,
    student_sf,
)


def spec(**over: Any) -> PromptRolloutSpec:
    body: dict[str, Any] = {"prompt": "t", "stable": "t-v1", "candidate": "t-v2",
                            "steps": [{"weight": 10, "minRuns": 5}, {"weight": 50, "minRuns": 5}],
                            "onlineGates": [{"signal": "schemaFailureRate", "maxDegradation": 0.0}],
                            "minSamples": 20}
    body.update(over)
    return PromptRolloutSpec.model_validate(body)


def rate(failures: int, n: int) -> Sample:
    return Sample.of([1.0] * failures + [0.0] * (n - failures))


PASSED = EvaluationState(True, "Passed", 1.0, 0.9)
GATE_OK = ("Pass", "EvaluationPassed", "ok")


def test_distributions_match_known_values() -> None:
    assert normal_sf(1.6448536) == pytest.approx(0.05, abs=1e-6)
    assert student_sf(2.228, 10) == pytest.approx(0.025, abs=1e-4)  # the t table's 97.5th percentile, 10 df
    assert student_sf(-2.228, 10) == pytest.approx(0.975, abs=1e-4)
    assert student_sf(0.0, 3) == pytest.approx(0.5)
    assert student_sf(math.inf, 3) == 0.0


def test_a_rate_ten_points_worse_fails_and_an_equal_one_passes() -> None:
    g = OnlineGate(signal="schemaFailureRate", max_degradation=0.0)
    worse = gate_verdict(g, rate(40, 200), rate(20, 200), 20, 0.025)
    assert worse.verdict == "Fail" and worse.p_value is not None and worse.p_value < 0.025
    assert (worse.candidate, worse.stable, worse.candidate_samples) == (0.2, 0.1, 200)
    equal = gate_verdict(g, rate(20, 200), rate(20, 200), 20, 0.025)
    assert equal.verdict == "Pass" and equal.p_value == pytest.approx(0.5, abs=0.01)
    better = gate_verdict(g, rate(0, 50), rate(10, 50), 20, 0.025)
    assert better.verdict == "Pass" and better.p_value is not None and better.p_value > 0.9


def test_max_degradation_is_the_tolerance() -> None:
    tolerant = OnlineGate(signal="stepFailureRate", max_degradation=0.15)
    assert gate_verdict(tolerant, rate(40, 200), rate(20, 200), 20, 0.025).verdict == "Pass"  # 10 points < 15


def test_below_min_samples_the_gate_waits() -> None:
    g = OnlineGate(signal="schemaFailureRate")
    waiting = gate_verdict(g, rate(19, 19), rate(0, 100), 20, 0.05)
    assert waiting.verdict == "Wait" and waiting.p_value is None and waiting.candidate_samples == 19


def test_zero_and_all_failures_have_a_usable_variance() -> None:
    g = OnlineGate(signal="schemaFailureRate")
    assert gate_verdict(g, rate(0, 30), rate(0, 30), 20, 0.05).verdict == "Pass"
    assert gate_verdict(g, rate(30, 30), rate(0, 30), 20, 0.05).verdict == "Fail"


def test_judge_score_lower_is_worse() -> None:
    rng = random.Random(1)
    g = OnlineGate(signal="judgeScore", max_degradation=0.0)
    stable = Sample.of(min(1.0, max(0.0, rng.gauss(0.8, 0.1))) for _ in range(100))
    lower = Sample.of(min(1.0, max(0.0, rng.gauss(0.6, 0.1))) for _ in range(100))
    higher = Sample.of(min(1.0, max(0.0, rng.gauss(0.9, 0.1))) for _ in range(100))
    assert gate_verdict(g, lower, stable, 20, 0.05).verdict == "Fail"
    result = gate_verdict(g, higher, stable, 20, 0.05)
    assert result.verdict == "Pass" and result.test == "one-sided Welch t"


def test_cost_and_latency_degradation_is_relative() -> None:
    g = OnlineGate(signal="costPerRun", max_degradation=0.5)
    stable = Sample.of([1.0, 1.1, 0.9] * 20)
    assert gate_verdict(g, Sample.of([1.3, 1.4, 1.2] * 20), stable, 20, 0.05).verdict == "Pass"  # +30 % < 50 %
    assert gate_verdict(g, Sample.of([2.0, 2.1, 1.9] * 20), stable, 20, 0.05).verdict == "Fail"  # +100 %
    exact = gate_verdict(OnlineGate(signal="latencySeconds"), Sample.of([2.0] * 30), Sample.of([1.0] * 30), 20, 0.05)
    assert exact.verdict == "Fail" and exact.p_value == 0.0  # no variance at all: the difference is exact


def test_alpha_is_split_over_steps_and_gates() -> None:
    s = spec(onlineGates=[{"signal": "schemaFailureRate"}, {"signal": "latencySeconds", "maxDegradation": 0.2}])
    assert alpha_of(s) == pytest.approx(0.05 / 4)


def test_evaluation_gate() -> None:
    s = spec()
    assert evaluation_gate(s, PASSED, EvaluationState(False))[0] == "Pass"
    assert evaluation_gate(s, EvaluationState(True, "Running"), EvaluationState(False))[:2] == (
        "Wait", "WaitingForEvaluation")
    assert evaluation_gate(s, EvaluationState(True, None), EvaluationState(False))[0] == "Wait"  # Pending
    failed = evaluation_gate(s, EvaluationState(True, "Failed", 0.5), EvaluationState(False))
    assert failed[:2] == ("Fail", "EvaluationFailed") and "50%" in failed[2]
    assert evaluation_gate(s, EvaluationState(False), EvaluationState(False))[:2] == ("Fail", "NoEvaluationSuite")
    lax = spec(evaluationGate={"required": False})
    assert evaluation_gate(lax, EvaluationState(False), EvaluationState(False))[0] == "Pass"
    assert evaluation_gate(lax, EvaluationState(True, "Failed"), EvaluationState(False))[0] == "Fail"


def test_evaluation_not_worse_than_stable() -> None:
    s = spec(evaluationGate={"notWorseThanStable": True})
    assert evaluation_gate(s, PASSED, EvaluationState(False))[1] == "StableNotEvaluated"
    assert evaluation_gate(s, PASSED, EvaluationState(True, "Running"))[0] == "Wait"
    worse = evaluation_gate(s, EvaluationState(True, "Passed", 0.9, 0.7), EvaluationState(True, "Passed", 1.0, 0.8))
    assert worse[:2] == ("Fail", "WorseThanStable") and "pass rate 90% < stable's 100%" in worse[2]
    assert evaluation_gate(s, PASSED, EvaluationState(True, "Passed", 1.0, 0.9))[0] == "Pass"


def test_evaluation_state_reads_the_raw_status() -> None:
    body = {"spec": {"evaluations": {"cases": []}}, "status": {"evaluation": {"phase": "Passed", "passRate": 1,
                                                                               "meanScore": True}}}
    assert EvaluationState.from_body(body) == EvaluationState(True, "Passed", 1.0, None)
    assert EvaluationState.from_body({"spec": {}, "status": {"evaluation": "junk"}}) == EvaluationState(False)


def stats(runs: int, failures: int, n: int) -> VersionStats:
    return VersionStats(runs, {"schemaFailureRate": rate(failures, n)})


def test_the_rollout_goes_step_by_step_to_promotion() -> None:
    s = spec()
    start = decide(s, RolloutState(), 100.0, GATE_OK, VersionStats(), VersionStats())
    assert (start.action, start.phase, start.weight, start.new_step) == ("Start", "Progressing", 10, True)
    state = RolloutState("Progressing", 0, 100.0)
    few = decide(s, state, 200.0, GATE_OK, stats(4, 0, 4), stats(30, 0, 30))
    assert (few.action, few.reason) == ("Wait", "CollectingRuns") and "candidate has 4 of 5 runs" in few.message
    samples = decide(s, state, 200.0, GATE_OK, stats(5, 0, 10), stats(30, 0, 30))
    assert samples.reason == "CollectingSamples" and "10/30 samples" in samples.message
    advance = decide(s, state, 200.0, GATE_OK, stats(25, 1, 25), stats(30, 1, 30))
    assert (advance.action, advance.step_index, advance.weight, advance.new_step) == ("Advance", 1, 50, True)
    assert advance.gates[0].verdict == "Pass"
    promote = decide(s, RolloutState("Progressing", 1, 200.0), 300.0, GATE_OK, stats(25, 1, 50), stats(30, 1, 60))
    assert (promote.action, promote.phase, promote.weight) == ("Promote", "Promoted", 100)
    done = decide(s, RolloutState("Promoted", 1, 200.0), 400.0, GATE_OK, VersionStats(), VersionStats())
    assert (done.action, done.weight) == ("Wait", 100)


def test_a_failed_gate_rolls_back_or_pauses() -> None:
    state = RolloutState("Progressing", 0, 100.0)
    back = decide(spec(), state, 200.0, GATE_OK, stats(40, 20, 40), stats(40, 2, 40))
    assert (back.action, back.phase, back.weight) == ("Rollback", "RolledBack", 0)
    assert "schemaFailureRate fail: candidate 0.5 (n=40) vs stable 0.05 (n=40)" in back.message
    paused = decide(spec(onFailure="Pause"), state, 200.0, GATE_OK, stats(40, 20, 40), stats(40, 2, 40))
    assert (paused.action, paused.phase, paused.weight) == ("Pause", "Paused", 10)


def test_pause_seconds_hold_a_step() -> None:
    s = spec(steps=[{"weight": 20, "minRuns": 1, "pauseSeconds": 60}], onlineGates=[])
    state = RolloutState("Progressing", 0, 100.0)
    held = decide(s, state, 130.0, GATE_OK, VersionStats(3), VersionStats(3))
    assert held.action == "Wait" and "30s of pauseSeconds left" in held.message
    assert decide(s, state, 160.0, GATE_OK, VersionStats(3), VersionStats(3)).action == "Promote"


def test_evaluation_decides_before_traffic() -> None:
    failed = decide(spec(), RolloutState(), 1.0, ("Fail", "EvaluationFailed", "no"), VersionStats(), VersionStats())
    assert (failed.action, failed.phase, failed.weight) == ("Fail", "Failed", 0)
    wait = decide(spec(), RolloutState(), 1.0, ("Wait", "WaitingForEvaluation", "Running"), VersionStats(),
                  VersionStats())
    assert (wait.phase, wait.weight) == ("WaitingForEvaluation", 0)


@pytest.mark.parametrize(("over", "field", "message"), [
    ({"steps": [{"weight": 50}, {"weight": 20}]}, "steps", "steps[1].weight: 20 is not above steps[0].weight 50"),
    ({"steps": [{"weight": 100}]}, "steps.0.weight", "less than or equal to 99"),
    ({"steps": []}, "steps", "at least 1"),
    ({"candidate": "t-v1"}, "", "'t-v1' is the stable version too"),
    ({"onlineGates": [{"signal": "judgeScore"}, {"signal": "judgeScore"}]}, "onlineGates",
     "onlineGates[1].signal: judgeScore has a gate already"),
    ({"onlineGates": [{"signal": "schemaFailureRate", "maxDegradation": 2}]}, "onlineGates.0",
     "maxDegradation: 2.0 is more than 1"),
    ({"onlineGates": [{"signal": "tokens"}]}, "onlineGates.0.signal", "schemaFailureRate"),
    ({"confidence": 1.0}, "confidence", "less than or equal to 0.9999"),
    ({"minSamples": 1}, "minSamples", "greater than or equal to 2"),
    ({"onFailure": "Ignore"}, "onFailure", "Rollback"),
])
def test_bad_specs_name_the_field(over: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**over)
    errors = info.value.errors()
    assert any(".".join(str(p) for p in e["loc"]).startswith(field) and message in e["msg"] for e in errors), errors


def test_the_wire_form_has_no_null_or_infinity() -> None:
    exact = gate_verdict(OnlineGate(signal="latencySeconds"), Sample.of([2.0] * 30), Sample.of([1.0] * 30), 20, 0.05)
    assert exact.statistic == math.inf
    wire = exact.to_dict()
    assert "statistic" not in wire and wire["pValue"] == 0.0 and wire["verdict"] == "Fail"
    waiting = gate_verdict(OnlineGate(signal="judgeScore"), Sample(), Sample(), 20, 0.05).to_dict()
    assert set(waiting) == {"signal", "verdict", "candidateSamples", "stableSamples", "maxDegradation", "alpha",
                            "test"}
