"""A suite's summary against its thresholds, the judge's answers read back, the pairwise order."""

from __future__ import annotations

from typing import Any

from agentflow.models import PromptVersion
from agentflow.prompts import suite
from agentflow.prompts.assertions import Verdict

PASS, FAIL = Verdict("cel", True, 1.0, "true"), Verdict("cel", False, 0.0, "false")


def prompt(evaluations: dict[str, Any]) -> PromptVersion:
    return PromptVersion.model_validate({"metadata": {"name": "p-v2"}, "spec": {
        "prompt": "p", "version": "2", "messages": [{"role": "user", "content": "hi"}],
        "evaluations": {"agentRef": {"name": "a"}, "cases": [{"name": "c"}], **evaluations}}})


def case(name: str, *verdicts: Verdict, error: str | None = None, pairwise: str | None = None) -> suite.CaseResult:
    return suite.CaseResult(name, {"x": 1}, error, verdicts, 0.001, 10, 5.0, pairwise)


def summarize(evaluations: dict[str, Any], *cases: suite.CaseResult) -> suite.SuiteResult:
    p = prompt(evaluations)
    assert p.spec.evaluations is not None
    return suite.summarize(p, p.spec.evaluations, cases)


def test_pass_rate_mean_score_and_totals() -> None:
    result = summarize({"minPassRate": 0.5}, case("a", PASS, PASS), case("b", PASS, FAIL),
                       case("c", error="InvalidModelOutput: no"))
    assert [c.passed for c in result.cases] == [True, False, False]
    assert [c.score for c in result.cases] == [1.0, 0.5, 0.0]
    assert round(result.pass_rate, 4) == 0.3333 and result.mean_score == 0.5
    assert result.failures == ("pass rate 33.33% is below minPassRate 50.00%",)
    assert not result.passed
    assert (round(result.cost_usd, 6), result.tokens, result.latency_ms) == (0.003, 30, 5.0)
    body = result.to_dict()
    assert body["passRate"] == 0.3333 and body["cases"][2]["error"].startswith("InvalidModelOutput")


def test_a_case_without_assertions_scores_one() -> None:
    assert summarize({}, case("a")).passed


def test_mean_score_and_win_rate_minimums() -> None:
    judged = Verdict("judge", True, 0.6, "score 0.6")
    result = summarize({"minMeanScore": 0.7, "judge": {"agentRef": {"name": "j"}, "pairwiseAgainst": {"name": "v1"},
                                                       "minWinRate": 0.6}},
                       case("a", judged, pairwise="win"), case("b", judged, pairwise="tie"))
    assert result.win_rate == 0.75
    assert result.failures == ("mean score 0.600 is below minMeanScore 0.7",)


def test_judge_answers() -> None:
    assert suite.judge_verdict({"score": 0.8, "reasoning": "fine"}, 0.7).passed
    low = suite.judge_verdict({"score": 0.2, "reasoning": "off topic"}, 0.7)
    assert (low.passed, low.score) == (False, 0.2) and "off topic" in low.detail
    assert not suite.judge_verdict("nonsense", 0.0).passed


def test_pairwise_order_and_outcome() -> None:
    swaps = {name: suite.pairwise_swapped(name) for name in ("a", "b", "c", "d", "e", "f", "g", "h")}
    assert set(swaps.values()) == {True, False}  # neither version is always first
    assert suite.pairwise_swapped("a") == swaps["a"]  # and the same case is always shown the same way
    inputs = suite.pairwise_inputs("r", {"t": 1}, "OURS", "THEIRS", swapped=True)
    assert (inputs["a"], inputs["b"]) == ("THEIRS", "OURS")
    assert suite.pairwise_outcome({"winner": "B"}, swapped=True) == "win"
    assert suite.pairwise_outcome({"winner": "B"}, swapped=False) == "loss"
    assert suite.pairwise_outcome({"winner": "tie"}, swapped=False) == "tie"


def test_the_judge_prompts_are_valid_prompt_versions() -> None:
    judge = suite.judge_prompt("p-v2.judge")
    assert judge.spec.output_schema == suite.JUDGE_SCHEMA
    assert "inputs.rubric" in judge.spec.messages[1].content
    assert suite.pairwise_prompt("p-v2.pairwise").spec.output_schema == suite.PAIRWISE_SCHEMA
