"""The PromptRollout resource: a canary rollout of a prompt family, gated on evidence.

Why a kind of its own: a PromptVersion's whole spec is immutable (CEL ``self == oldSelf``: a version is what
was evaluated and what runs recorded), while a rollout is a changing intent (which version is the candidate,
how fast it goes, which gates hold it). Keeping it apart lets Git change the rollout without touching a
version, lets the operator write the rollout's progress (status.weight, status.phase) on one object, and
leaves ``PromptVersion.spec.canary`` (a fixed weight, no gates) as it was: a family has one or the other,
never both (agentflow.prompts.rollout says which two objects clash).

What the operator does with it (agentflow.services.canary, decisions in agentflow.prompts.canary)::

    WaitingForEvaluation  the candidate's evaluation (status.evaluation.phase) is not Passed yet: weight 0
    Progressing           at steps[stepIndex]: the candidate gets that weight of the family's runs; when both
                          versions have the step's minRuns (and pauseSeconds passed) every online gate is tested
                          and the rollout advances, or promotes after the last step
    Paused                a gate failed with onFailure: Pause: the weight is held, no more decisions until the
                          spec changes (a new generation starts the rollout again at step 0)
    Promoted              every step passed: the candidate gets 100 % (it is the family's stable while this
                          PromptRollout exists)
    RolledBack            a gate failed with onFailure: Rollback: the candidate gets 0 %
    Failed                the candidate's evaluation failed, or the spec names versions that are not of the
                          family: the candidate never gets traffic

Changing the spec (a new candidate, other steps) makes a new metadata.generation: the operator starts over.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .base import API_VERSION, Model, ObjectMeta, ResourceStatus

__all__ = [
    "RELATIVE_SIGNALS",
    "SIGNALS",
    "EvaluationGate",
    "OnlineGate",
    "PromptRollout",
    "PromptRolloutSpec",
    "PromptRolloutStatus",
    "RolloutDecision",
    "RolloutGateResult",
    "RolloutPhase",
    "RolloutSignal",
    "RolloutStep",
]

RolloutSignal = Literal["schemaFailureRate", "stepFailureRate", "judgeScore", "costPerRun", "latencySeconds"]
SIGNALS: tuple[str, ...] = ("schemaFailureRate", "stepFailureRate", "judgeScore", "costPerRun", "latencySeconds")
RELATIVE_SIGNALS = frozenset({"costPerRun", "latencySeconds"})
"""Signals whose maxDegradation is a fraction of the stable version's mean (the others: absolute)."""
RolloutPhase = Literal["WaitingForEvaluation", "Progressing", "Paused", "Promoted", "RolledBack", "Failed"]


class RolloutStep(Model):
    """One step of traffic: the candidate's share of the family's runs until the step's gates pass."""

    weight: int = Field(ge=1, le=99)
    """Percent of the family's runs the candidate gets during this step (1 to 99; passing the last step
    promotes the candidate to 100)."""
    min_runs: int = Field(default=20, ge=1, le=100_000)
    """Runs of each version (started during this step, with an ended attempt of a family step) before the
    gates are looked at."""
    pause_seconds: int = Field(default=0, ge=0, le=604_800)
    """Least time the step lasts (seconds since it began), on top of minRuns."""


class EvaluationGate(Model):
    """The candidate's offline evaluation (PromptVersion status.evaluation, written by the operator's
    evaluation runs) before it gets any traffic."""

    required: bool = True
    """The candidate must have an evaluation suite (spec.evaluations) whose status.evaluation.phase is Passed.
    false: a candidate without a suite passes this gate (one with a suite must still pass it)."""
    not_worse_than_stable: bool = False
    """Also: the candidate's status.evaluation.passRate (and meanScore, when both have one) at least the
    stable version's (the stable version needs a suite and a finished evaluation)."""


class OnlineGate(Model):
    """A quality signal of live runs, candidate versus stable, tested at the end of each step."""

    signal: RolloutSignal
    """schemaFailureRate (attempts whose answer broke the outputSchema), stepFailureRate (attempts that
    failed or timed out), judgeScore (the score a step's result carries, 0..1: lower is worse; NOT produced
    yet: no shipped executor or online judge puts a score on a step's result, so a judgeScore gate gets no
    samples and its rollout waits at its first step), costPerRun (US dollars of the family's steps in a run),
    latencySeconds (an attempt, scheduled to end)."""
    max_degradation: float = Field(default=0.0, ge=0, le=100)
    """How much worse the candidate may be before the gate fails: absolute for the rates and judgeScore
    (0.05 = 5 points), a fraction of the stable mean for costPerRun and latencySeconds (0.2 = 20 %)."""

    @model_validator(mode="after")
    def _bounded(self) -> OnlineGate:
        if self.signal not in RELATIVE_SIGNALS and self.max_degradation > 1:
            raise ValueError(f"maxDegradation: {self.max_degradation} is more than 1 ({self.signal} is a rate "
                             "or score between 0 and 1; the tolerance is absolute)")
        return self


class PromptRolloutSpec(Model):
    """Desired rollout of a prompt family: from stable to candidate, step by step, gated."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.stable != self.candidate", "message": "candidate is the stable version too"}]})

    prompt: str = Field(min_length=1, max_length=253)
    """The prompt family (the PromptVersions' spec.prompt)."""
    stable: str = Field(min_length=1, max_length=253)
    """The PromptVersion that has the family's runs now."""
    candidate: str = Field(min_length=1, max_length=253)
    """The PromptVersion rolled out."""
    steps: list[RolloutStep] = Field(min_length=1, max_length=20)
    """Traffic steps, weights strictly increasing."""
    evaluation_gate: EvaluationGate = Field(default_factory=EvaluationGate)
    """The offline gate before any traffic."""
    online_gates: list[OnlineGate] = Field(default_factory=list, max_length=5, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["signal"]})
    """Live gates, one per signal (none: steps advance on minRuns and pauseSeconds alone)."""
    min_samples: int = Field(default=30, ge=2, le=1_000_000)
    """Samples of a signal each version needs before its gate is tested (fewer: the rollout waits)."""
    confidence: float = Field(default=0.95, ge=0.5, le=0.9999)
    """1 - the chance that a candidate as good as stable is rolled back: split evenly over every test the
    rollout can make (steps x gates, Bonferroni), each a one-sided test at that level."""
    on_failure: Literal["Rollback", "Pause"] = "Rollback"
    """What a failed online gate does: Rollback (candidate to 0 %) or Pause (the weight held)."""

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[RolloutStep]) -> list[RolloutStep]:
        for i in range(1, len(steps)):
            if steps[i].weight <= steps[i - 1].weight:
                raise ValueError(f"steps[{i}].weight: {steps[i].weight} is not above steps[{i - 1}].weight "
                                 f"{steps[i - 1].weight} (weights increase step by step)")
        return steps

    @field_validator("online_gates")
    @classmethod
    def _one_per_signal(cls, gates: list[OnlineGate]) -> list[OnlineGate]:
        seen: set[str] = set()
        for i, gate in enumerate(gates):
            if gate.signal in seen:
                raise ValueError(f"onlineGates[{i}].signal: {gate.signal} has a gate already (one per signal)")
            seen.add(gate.signal)
        return gates

    @model_validator(mode="after")
    def _two_versions(self) -> PromptRolloutSpec:
        if self.stable == self.candidate:
            raise ValueError(f"candidate: {self.candidate!r} is the stable version too (roll out another one)")
        return self


class RolloutGateResult(Model):
    """The numbers of one online gate at the last look."""

    signal: str
    """The gate's signal."""
    verdict: Literal["Pass", "Fail", "Wait"]
    """Pass, Fail, or Wait (too few samples)."""
    candidate_samples: int = 0
    """Samples of the candidate since the rollout started."""
    stable_samples: int = 0
    """Samples of the stable version since the rollout started."""
    candidate: float | None = None
    """The candidate's rate or mean."""
    stable: float | None = None
    """The stable version's rate or mean."""
    max_degradation: float = 0.0
    """The gate's maxDegradation."""
    statistic: float | None = None
    """z (rates) or Welch's t (means) of the one-sided test."""
    p_value: float | None = None
    """One-sided p-value of "the candidate is no worse than allowed"."""
    alpha: float | None = None
    """The level the p-value is compared with (Fail below it)."""
    test: str = ""
    """The test used."""


class RolloutDecision(Model):
    """The last decision the operator made."""

    action: str
    """Start, Wait, Advance, Promote, Rollback, Pause, Fail."""
    reason: str
    """One CamelCase word."""
    message: str
    """What was decided, with the numbers."""
    at: str
    """RFC 3339 time of the decision."""


class PromptRolloutStatus(ResourceStatus):
    """Observed state of a PromptRollout, kept by the operator."""

    phase: RolloutPhase | None = None
    """WaitingForEvaluation, Progressing, Paused, Promoted, RolledBack or Failed."""
    step_index: int | None = None
    """The step the rollout is at (0-based)."""
    weight: int | None = Field(default=None, ge=0, le=100)
    """Percent of the family's runs the candidate gets now (what run selection reads)."""
    started_at: str | None = None
    """When the rollout (this generation) started; samples are counted from runs started since."""
    step_started_at: str | None = None
    """When the current step began; minRuns counts runs started since."""
    candidate_runs: int | None = None
    """Runs of the candidate in the current step."""
    stable_runs: int | None = None
    """Runs of the stable version in the current step."""
    gates: list[RolloutGateResult] = Field(default_factory=list)
    """The online gates' numbers at the last look."""
    last_decision: RolloutDecision | None = None


class PromptRollout(Model):
    """A PromptRollout: steps of traffic from a family's stable PromptVersion to a candidate, gated on its
    evaluation and on live quality compared with the stable version."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["PromptRollout"] = "PromptRollout"
    metadata: ObjectMeta
    spec: PromptRolloutSpec
    status: PromptRolloutStatus | None = None
