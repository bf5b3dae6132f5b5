"""An evaluation suite's judge prompts, the judge's answers, and the suite's summary against its thresholds.

The judge is an ordinary llm call: the driver runs it through the same executor and gateway as a case,
with the suite's judge Agent and a PromptVersion built here (never loaded from manifests, so it cannot be
edited to say yes):

    judge_prompt(name)      answers {score: 0..1, reasoning}: how well the output meets the rubric
    pairwise_prompt(name)   answers {winner: A | B | tie, reasoning}: which of two outputs is better; which
                            version is shown as A is drawn from the case name (pairwise_swapped), so neither
                            version is always first

A case passes when its attempt succeeded (the output met the outputSchema) and every assertion passed;
its score is the mean of its assertions' scores (1 with none; 0 when the attempt failed). The suite passes
when the pass rate, the mean score and the pairwise win rate (ties count half) reach the minimums it sets.

Both drivers conclude a case with :func:`case_result` from the :class:`Outcome` of each of its attempts: the
local one (agentflow.runner.evaluate) as the attempts end, the operator (agentflow.k8s.evaluation) from the
journal of the evaluation Workflow whose steps they were. Values are written into the judge's prompts as
the engine writes any value into text (agentflow.engine.templates.stringify), so a judge reads the same
prompt whichever driver asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from agentflow.engine.templates import stringify
from agentflow.models import EvaluationCase, EvaluationSuite, PromptVersion

from .assertions import Verdict, check

__all__ = [
    "JUDGE_SCHEMA", "PAIRWISE_SCHEMA", "CaseResult", "Outcome", "SuiteResult", "case_result", "judge_inputs",
    "judge_prompt",
    "judge_verdict", "pairwise_inputs", "pairwise_outcome", "pairwise_prompt", "pairwise_swapped", "summarize",
]

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["score", "reasoning"],
    "additionalProperties": False,
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}, "reasoning": {"type": "string"}},
}
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["winner", "reasoning"],
    "additionalProperties": False,
    "properties": {"winner": {"enum": ["A", "B", "tie"]}, "reasoning": {"type": "string"}},
}


def _prompt(name: str, family: str, system: str, user: str, schema: dict[str, Any]) -> PromptVersion:
    return PromptVersion.model_validate({
        "metadata": {"name": name},
        "spec": {"prompt": family, "version": "builtin", "outputSchema": schema,
                 "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]},
    })


def judge_prompt(name: str) -> PromptVersion:
    """The PromptVersion (named ``name``) of a judge assertion; inputs from :func:`judge_inputs`."""
    return _prompt(
        name, "agentflow-judge",
        "You evaluate the output of another model against a rubric. Score from 0 (does not meet the rubric "
        "at all) to 1 (fully meets it), and say why in one or two sentences. Judge only against the rubric.",
        "Rubric: ${{ inputs.rubric }}\n\nInputs the model was given: ${{ inputs.inputs }}\n\n"
        "Output to judge: ${{ inputs.output }}",
        JUDGE_SCHEMA)


def pairwise_prompt(name: str) -> PromptVersion:
    """The PromptVersion (named ``name``) of a pairwise comparison; inputs from :func:`pairwise_inputs`."""
    return _prompt(
        name, "agentflow-pairwise",
        "You compare two outputs produced for the same inputs and say which is better for the task "
        "(A, B, or tie when neither is better), and why in one or two sentences. The order is arbitrary.",
        "Task criteria: ${{ inputs.rubric }}\n\nInputs: ${{ inputs.inputs }}\n\nOutput A: ${{ inputs.a }}\n\n"
        "Output B: ${{ inputs.b }}",
        PAIRWISE_SCHEMA)


def _text(value: Any) -> str:
    return stringify(value)


def judge_inputs(rubric: str, inputs: Mapping[str, Any], output: Any) -> dict[str, str]:
    return {"rubric": rubric, "inputs": _text(dict(inputs)), "output": _text(output)}


def pairwise_swapped(case: str) -> bool:
    """Whether the version under evaluation is shown as B (drawn from the case name: stable, about half)."""
    return hashlib.sha256(case.encode()).digest()[0] & 1 == 1


def pairwise_inputs(rubric: str, inputs: Mapping[str, Any], ours: Any, theirs: Any,
                    swapped: bool) -> dict[str, str]:
    a, b = (theirs, ours) if swapped else (ours, theirs)
    return {"rubric": rubric, "inputs": _text(dict(inputs)), "a": _text(a), "b": _text(b)}


def judge_verdict(answer: Any, min_score: float) -> Verdict:
    """A judge assertion's verdict from the judge's answer (validated against JUDGE_SCHEMA by the step)."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("score"), int | float):
        return Verdict("judge", False, 0.0, f"the judge's answer has no score: {_text(answer)[:120]}")
    score = min(1.0, max(0.0, float(answer["score"])))
    reasoning = str(answer.get("reasoning", ""))[:200]
    return Verdict("judge", score >= min_score, score, f"score {score:.2f} (min {min_score}): {reasoning}")


def pairwise_outcome(answer: Any, swapped: bool) -> str:
    """win, loss or tie of the version under evaluation, from the judge's answer."""
    winner = answer.get("winner") if isinstance(answer, Mapping) else None
    if winner not in ("A", "B"):
        return "tie"
    ours = "B" if swapped else "A"
    return "win" if winner == ours else "loss"


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """One case: its output (or error), the assertions' verdicts, and what its calls cost."""

    name: str
    output: Any
    error: str | None
    verdicts: tuple[Verdict, ...]
    cost_usd: float
    tokens: int
    latency_ms: float
    pairwise: str | None = None  # win, loss or tie against judge.pairwiseAgainst
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts)

    @property
    def score(self) -> float:
        if self.error is not None:
            return 0.0
        if not self.verdicts:
            return 1.0
        return sum(v.score for v in self.verdicts) / len(self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "passed": self.passed, "score": round(self.score, 4), "output": self.output,
            "assertions": [v.to_dict() for v in self.verdicts], "costUsd": round(self.cost_usd, 6),
            "tokens": self.tokens, "latencyMs": round(self.latency_ms, 1),
        }
        if self.error is not None:
            out["error"] = self.error
        if self.pairwise is not None:
            out["pairwise"] = self.pairwise
        return out


@dataclasses.dataclass(frozen=True)
class SuiteResult:
    """A suite's results and verdict; ``failures`` says which minimum each failed threshold missed."""

    prompt: str
    family: str
    version: str
    cases: tuple[CaseResult, ...]
    pass_rate: float
    mean_score: float
    win_rate: float | None
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.cases)

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.cases)

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for c in self.cases)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.cases)

    @property
    def latency_ms(self) -> float:
        """Mean latency of a case (its calls' latencies summed)."""
        return sum(c.latency_ms for c in self.cases) / len(self.cases) if self.cases else 0.0

    @property
    def latency_p50_ms(self) -> float:
        """Median latency of a case (its calls' latencies summed; the lower middle of an even count)."""
        ordered = sorted(c.latency_ms for c in self.cases)
        return ordered[(len(ordered) - 1) // 2] if ordered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt, "family": self.family, "version": self.version, "passed": self.passed,
            "passRate": round(self.pass_rate, 4), "meanScore": round(self.mean_score, 4),
            **({"winRate": round(self.win_rate, 4)} if self.win_rate is not None else {}),
            "costUsd": round(self.cost_usd, 6), "tokens": self.tokens, "meanLatencyMs": round(self.latency_ms, 1),
            "failures": list(self.failures), "cases": [c.to_dict() for c in self.cases],
        }


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one attempt of a case ended: its output, or why it failed."""

    output: Any = None
    error: str | None = None


def case_result(case: EvaluationCase, suite: EvaluationSuite, answer: Outcome, judged: Mapping[int, Outcome],
                baseline: Outcome | None, compared: Outcome | None, *, cost_usd: float, input_tokens: int,
                output_tokens: int, latency_ms: float) -> CaseResult:
    """A case concluded from its attempts: ``answer`` (the case's own; its error is the case's error),
    ``judged[i]`` the judge's answer for judge assertion ``i``, ``baseline`` and ``compared`` the other
    version's answer and the pairwise judge's (None when not run). A judge that failed fails its assertion;
    a baseline that failed is a win, a comparison that failed a tie."""
    def result(error: str | None, verdicts: tuple[Verdict, ...], pairwise: str | None) -> CaseResult:
        return CaseResult(case.name, answer.output, error, verdicts, cost_usd, input_tokens + output_tokens,
                          latency_ms, pairwise, input_tokens, output_tokens)

    if answer.error is not None:
        return result(answer.error, (), None)
    verdicts: list[Verdict] = []
    for i, assertion in enumerate(case.assertions):
        if assertion.judge is None:
            verdicts.append(check(assertion, answer.output, case.inputs))
            continue
        judge = judged.get(i, Outcome(error="it did not run"))
        verdicts.append(judge_verdict(judge.output, assertion.judge.min_score) if judge.error is None else
                        Verdict("judge", False, 0.0, f"the judge failed: {judge.error}"))
    pairwise: str | None = None
    if suite.judge is not None and suite.judge.pairwise_against is not None:
        if baseline is None or baseline.error is not None:
            pairwise = "win"  # the other version failed the case outright
        elif compared is None or compared.error is not None:
            pairwise = "tie"
        else:
            pairwise = pairwise_outcome(compared.output, pairwise_swapped(case.name))
    return result(None, tuple(verdicts), pairwise)


def summarize(prompt: PromptVersion, suite: EvaluationSuite, cases: Sequence[CaseResult]) -> SuiteResult:
    """The suite's rates and verdict against its minimums."""
    n = len(cases)
    pass_rate = sum(c.passed for c in cases) / n if n else 0.0
    mean_score = sum(c.score for c in cases) / n if n else 0.0
    outcomes = [c.pairwise for c in cases if c.pairwise is not None]
    win_rate = (sum(1.0 if o == "win" else 0.5 if o == "tie" else 0.0 for o in outcomes) / len(outcomes)
                if outcomes else None)
    failures = []
    if pass_rate < suite.min_pass_rate:
        failures.append(f"pass rate {pass_rate:.2%} is below minPassRate {suite.min_pass_rate:.2%}")
    if suite.min_mean_score is not None and mean_score < suite.min_mean_score:
        failures.append(f"mean score {mean_score:.3f} is below minMeanScore {suite.min_mean_score}")
    judge = suite.judge
    if judge is not None and judge.min_win_rate is not None and (win_rate is None or win_rate < judge.min_win_rate):
        rate = "none" if win_rate is None else f"{win_rate:.2%}"
        failures.append(f"win rate against {judge.pairwise_against.name if judge.pairwise_against else '?'} "
                        f"{rate} is below judge.minWinRate {judge.min_win_rate:.2%}")
    return SuiteResult(prompt.metadata.name, prompt.spec.prompt, prompt.spec.version, tuple(cases), pass_rate,
                       mean_score, win_rate, tuple(failures))
