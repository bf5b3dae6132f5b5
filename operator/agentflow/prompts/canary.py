"""The canary gate of a PromptRollout (PURE): per-version samples in, the next decision out.

The operator (agentflow.services.canary) counts, from the durable journal, what each version's live runs did
and calls :func:`decide` with the rollout's current state; this module reads no clock, store or API.

The decision, in order::

    spec names versions of another family / missing         Fail       (candidate never gets traffic)
    evaluation gate: candidate's status.evaluation          Wait at 0  (WaitingForEvaluation) unless Passed;
                                                            Fail when Failed, or when required and the candidate
                                                            has no suite; notWorseThanStable compares pass rate
                                                            (and mean score) with the stable version's
    Promoted, RolledBack, Failed, Paused                    nothing (a new spec generation starts over)
    step i: each version has steps[i].minRuns runs started  Wait       (Progressing at steps[i].weight)
    in the step, and pauseSeconds have passed
    the look: every online gate tested                      Fail (a gate): Rollback or Pause (onFailure)
                                                            Wait (a gate below minSamples): Progressing
                                                            all Pass: Advance to step i+1, or Promote after
                                                            the last step

The test of a gate, "worse" oriented so that a larger difference is worse (failure rates and cost and latency
up, judge score down) and ``delta`` the gate's maxDegradation (absolute; for costPerRun and latencySeconds a
fraction of the stable mean)::

    H0: candidate - stable <= delta (no worse than allowed)   H1: candidate - stable > delta
    rates       one-sided two-proportion z with the Agresti-Caffo adjustment (one success and one failure
                added to each arm, so 0/n and n/n have a usable variance)
    judgeScore  one-sided Welch t on the means (Welch-Satterthwaite degrees of freedom)
    cost, latency  one-sided Welch t of candidate - (1 + delta) * stable
    p < alpha   Fail;   otherwise Pass (when both versions have minSamples samples; else Wait)

Samples are counted from the rollout's start (every step), so each look sees more evidence; a look happens at
most once per step. ``alpha = (1 - confidence) / (steps x gates)`` (Bonferroni over every look and gate) bounds
the chance that a candidate exactly as good as allowed is rolled back by ``1 - confidence``. What a look cannot
bound is a worse candidate passing for lack of samples: minSamples and minRuns set that, and
``bench/canary_bench.py`` measures it (false promotion rate, runs to detect a 10-point drop).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from agentflow.models.rollout import RELATIVE_SIGNALS, OnlineGate, PromptRolloutSpec

__all__ = [
    "Decision",
    "EvaluationState",
    "GateResult",
    "RolloutState",
    "Sample",
    "VersionStats",
    "alpha_of",
    "decide",
    "evaluation_gate",
    "gate_verdict",
    "student_sf",
]

Action = Literal["Wait", "Start", "Advance", "Promote", "Rollback", "Pause", "Fail"]
TERMINAL = frozenset({"Promoted", "RolledBack", "Failed", "Paused"})
LOWER_IS_WORSE = frozenset({"judgeScore"})
RATES = frozenset({"schemaFailureRate", "stepFailureRate"})


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """Summary of one signal of one version: count, sum, sum of squares (0/1 values for rates)."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Sample:
        vs = list(values)
        return cls(len(vs), sum(vs), sum(v * v for v in vs))

    def add(self, value: float) -> Sample:
        return Sample(self.n + 1, self.total + value, self.squares + value * value)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (n - 1), 0 below two samples."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


@dataclasses.dataclass(frozen=True, slots=True)
class VersionStats:
    """What one version's live runs did: runs in the current step, samples per signal since the start."""

    step_runs: int = 0
    signals: Mapping[str, Sample] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationState:
    """A PromptVersion's evaluation as the operator sees it: has a suite, status.evaluation (raw)."""

    has_suite: bool
    phase: str | None = None  # Pending | Running | Passed | Failed | Error
    pass_rate: float | None = None
    mean_score: float | None = None
    message: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> EvaluationState:
        spec = body.get("spec") or {}
        raw = (body.get("status") or {}).get("evaluation") or {}
        raw = raw if isinstance(raw, Mapping) else {}

        def number(key: str) -> float | None:
            v = raw.get(key)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        phase = raw.get("phase")
        return cls(bool(spec.get("evaluations")), str(phase) if isinstance(phase, str) else None,
                   number("passRate"), number("meanScore"), str(raw.get("message") or ""))


@dataclasses.dataclass(frozen=True, slots=True)
class RolloutState:
    """Where the rollout is (from its status; phase None: not started for this generation)."""

    phase: str | None = None
    step_index: int = 0
    step_started_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class GateResult:
    signal: str
    verdict: Literal["Pass", "Fail", "Wait"]
    candidate_samples: int
    stable_samples: int
    candidate: float | None
    stable: float | None
    max_degradation: float
    statistic: float | None
    p_value: float | None
    alpha: float
    test: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form (status.gates[], the audit record): unknown numbers left out, as the API server would
        prune a null."""
        out = {"signal": self.signal, "verdict": self.verdict, "candidateSamples": self.candidate_samples,
                "stableSamples": self.stable_samples, "candidate": _round(self.candidate),
                "stable": _round(self.stable), "maxDegradation": self.max_degradation,
                "statistic": _round(self.statistic), "pValue": _round(self.p_value), "alpha": _round(self.alpha),
                "test": self.test}
        return {k: v for k, v in out.items() if v is not None}


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    phase: str
    step_index: int
    weight: int
    reason: str
    message: str
    gates: tuple[GateResult, ...] = ()
    new_step: bool = False  # the step (re)starts now: its run count and start time reset

    @property
    def changes(self) -> bool:
        """A decision worth an Event and an audit record (not a Wait in the same phase)."""
        return self.action != "Wait"


def _round(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 6)  # JSON has no NaN or infinity


# --------------------------------------------------------------------------- distributions


def normal_sf(z: float) -> float:
    """P(Z > z) of the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (Numerical Recipes, modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_sf(t: float, df: float) -> float:
    """P(T > t) of Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


# --------------------------------------------------------------------------- the tests


def alpha_of(spec: PromptRolloutSpec) -> float:
    """The level of each one-sided test: 1 - confidence split over every look (steps) and gate."""
    return (1.0 - spec.confidence) / (len(spec.steps) * max(1, len(spec.online_gates)))


def gate_verdict(gate: OnlineGate, candidate: Sample, stable: Sample, min_samples: int, alpha: float) -> GateResult:
    """One gate's verdict: Wait below ``min_samples`` samples of either version, else Fail when the one-sided
    test rejects "candidate no worse than maxDegradation" at ``alpha``, else Pass."""
    delta, signal = gate.max_degradation, gate.signal

    def result(verdict: Literal["Pass", "Fail", "Wait"], stat: float | None, p: float | None,
               test: str) -> GateResult:
        return GateResult(signal, verdict, candidate.n, stable.n, candidate.mean if candidate.n else None,
                          stable.mean if stable.n else None, delta, stat, p, alpha, test)

    if signal in RATES:
        test = "one-sided two-proportion z (Agresti-Caffo)"
    elif signal in RELATIVE_SIGNALS:
        test = f"one-sided Welch t of candidate - {1 + delta:g} x stable"
    else:
        test = "one-sided Welch t"
    if candidate.n < min_samples or stable.n < min_samples:
        return result("Wait", None, None, test)
    if signal in RATES:
        pc, ps = (candidate.total + 1) / (candidate.n + 2), (stable.total + 1) / (stable.n + 2)
        se = math.sqrt(pc * (1 - pc) / (candidate.n + 2) + ps * (1 - ps) / (stable.n + 2))
        stat = (pc - ps - delta) / se
        p = normal_sf(stat)
    else:
        if signal in LOWER_IS_WORSE:
            diff, scale = stable.mean - candidate.mean - delta, 1.0
        elif signal in RELATIVE_SIGNALS:
            scale = 1.0 + delta
            diff = candidate.mean - scale * stable.mean
        else:
            diff, scale = candidate.mean - stable.mean - delta, 1.0
        vc, vs = candidate.variance / candidate.n, scale * scale * stable.variance / stable.n
        se = math.sqrt(vc + vs)
        if se == 0.0:  # every sample equal in both versions: the difference is exact
            stat = math.inf if diff > 0 else -math.inf if diff < 0 else 0.0
            p = 0.0 if diff > 0 else 1.0
        else:
            stat = diff / se
            df = (vc + vs) ** 2 / ((vc * vc / (candidate.n - 1) if vc else 0.0) + (vs * vs / (stable.n - 1) if vs
                                                                                  else 0.0))
            p = student_sf(stat, df)
    return result("Fail" if p < alpha else "Pass", stat, p, test)


# --------------------------------------------------------------------------- the decision


def evaluation_gate(spec: PromptRolloutSpec, candidate: EvaluationState,
                    stable: EvaluationState) -> tuple[Literal["Pass", "Wait", "Fail"], str, str]:
    """The offline gate: (verdict, reason, message)."""
    gate, name = spec.evaluation_gate, spec.candidate
    if not candidate.has_suite:
        if gate.required:
            return ("Fail", "NoEvaluationSuite", f"candidate {name} has no spec.evaluations and "
                    "evaluationGate.required is true: it never gets traffic")
        return "Pass", "NoEvaluationRequired", f"candidate {name} has no evaluation suite (not required)"
    phase = candidate.phase or "Pending"
    if phase == "Failed":
        return "Fail", "EvaluationFailed", f"candidate {name} failed its evaluation suite" + (
            f" (pass rate {candidate.pass_rate:.0%})" if candidate.pass_rate is not None else "") + (
            f": {candidate.message}" if candidate.message else "")
    if phase != "Passed":
        return "Wait", "WaitingForEvaluation", f"candidate {name}'s evaluation is {phase}" + (
            f": {candidate.message}" if candidate.message else "")
    if gate.not_worse_than_stable:
        if not stable.has_suite:
            return ("Fail", "StableNotEvaluated", f"evaluationGate.notWorseThanStable: stable {spec.stable} has no "
                    "spec.evaluations to compare with")
        if stable.phase not in ("Passed", "Failed") or stable.pass_rate is None:
            return "Wait", "WaitingForEvaluation", f"stable {spec.stable}'s evaluation is {stable.phase or 'Pending'}"
        worse = []
        if (candidate.pass_rate or 0.0) < stable.pass_rate:
            worse.append(f"pass rate {candidate.pass_rate or 0.0:.0%} < stable's {stable.pass_rate:.0%}")
        if candidate.mean_score is not None and stable.mean_score is not None and \
                candidate.mean_score < stable.mean_score:
            worse.append(f"mean score {candidate.mean_score:.3f} < stable's {stable.mean_score:.3f}")
        if worse:
            return "Fail", "WorseThanStable", f"candidate {name}'s evaluation: {'; '.join(worse)}"
    return "Pass", "EvaluationPassed", f"candidate {name} passed its evaluation"


def decide(spec: PromptRolloutSpec, state: RolloutState, now: float, evaluation: tuple[
        Literal["Pass", "Wait", "Fail"], str, str], candidate: VersionStats, stable: VersionStats) -> Decision:
    """The next decision of the rollout at ``now`` (seconds)."""
    if state.phase in TERMINAL:
        weight = 100 if state.phase == "Promoted" else (
            spec.steps[min(state.step_index, len(spec.steps) - 1)].weight if state.phase == "Paused" else 0)
        return Decision("Wait", state.phase, state.step_index, weight, state.phase, f"rollout {state.phase}")
    verdict, reason, message = evaluation
    if verdict == "Fail":
        return Decision("Fail", "Failed", 0, 0, reason, message)
    if verdict == "Wait":
        return Decision("Wait", "WaitingForEvaluation", 0, 0, reason, message)
    if state.phase != "Progressing" or state.step_started_at is None:
        first = spec.steps[0]
        return Decision("Start", "Progressing", 0, first.weight, "Started",
                        f"{message}; candidate {spec.candidate} gets {first.weight}% of family {spec.prompt}'s runs "
                        "(step 1 of " + f"{len(spec.steps)})", new_step=True)
    i = min(state.step_index, len(spec.steps) - 1)
    step = spec.steps[i]
    where = f"step {i + 1} of {len(spec.steps)} at {step.weight}%"
    short = [f"{who} has {s.step_runs} of {step.min_runs} runs" for who, s in (("candidate", candidate),
                                                                               ("stable", stable))
             if s.step_runs < step.min_runs]
    waited = now - state.step_started_at
    if waited < step.pause_seconds:
        short.append(f"{step.pause_seconds - waited:.0f}s of pauseSeconds left")
    if short:
        return Decision("Wait", "Progressing", i, step.weight, "CollectingRuns", f"{where}: {', '.join(short)}")
    alpha = alpha_of(spec)
    gates = tuple(gate_verdict(g, candidate.signals.get(g.signal, Sample()), stable.signals.get(g.signal, Sample()),
                            spec.min_samples, alpha) for g in spec.online_gates)
    failed = [g for g in gates if g.verdict == "Fail"]
    if failed:
        text = "; ".join(_explain(g) for g in failed)
        if spec.on_failure == "Pause":
            return Decision("Pause", "Paused", i, step.weight, "GateFailed", f"{where}: paused: {text}", gates)
        return Decision("Rollback", "RolledBack", i, 0, "GateFailed", f"{where}: rolled back: {text}", gates)
    waiting = [g for g in gates if g.verdict == "Wait"]
    if waiting:
        text = ", ".join(f"{g.signal} has {g.candidate_samples}/{g.stable_samples} samples (candidate/stable) of "
                         f"{spec.min_samples}" for g in waiting)
        return Decision("Wait", "Progressing", i, step.weight, "CollectingSamples", f"{where}: {text}", gates)
    passed = "; ".join(_explain(g) for g in gates) or "no online gates"
    if i + 1 < len(spec.steps):
        nxt = spec.steps[i + 1]
        return Decision("Advance", "Progressing", i + 1, nxt.weight, "StepPassed",
                        f"{where} passed ({passed}): step {i + 2} at {nxt.weight}%", gates, new_step=True)
    return Decision("Promote", "Promoted", i, 100, "Promoted",
                    f"{where} passed ({passed}): candidate {spec.candidate} promoted to 100%", gates)


def _explain(g: GateResult) -> str:
    c = "-" if g.candidate is None else f"{g.candidate:.4g}"
    s = "-" if g.stable is None else f"{g.stable:.4g}"
    p = "-" if g.p_value is None else f"{g.p_value:.3g}"
    return (f"{g.signal} {g.verdict.lower()}: candidate {c} (n={g.candidate_samples}) vs stable {s} "
            f"(n={g.stable_samples}), maxDegradation {g.max_degradation:g}, p={p} vs alpha {g.alpha:.3g}")
