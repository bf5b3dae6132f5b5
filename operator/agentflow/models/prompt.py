"""The PromptVersion resource: an immutable, versioned prompt template."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .base import API_VERSION, JSONValue, LocalRef, Model, ObjectMeta, ResourceStatus


class PartRef(Model):
    """A named part of a PromptVersion (its spec.parts), included in place of a message."""

    prompt: str = Field(min_length=1)
    """The PromptVersion holding the part (this one's own name for its own parts)."""
    part: str = Field(min_length=1)
    """The part's name in that PromptVersion's spec.parts."""


class PromptMessage(Model):
    """One message of the template: role and content (which may embed ${{ expr }} over the step's inputs),
    or ``include``: the messages of a named part of a PromptVersion (a shared policy preamble, few-shot
    examples), resolved when manifests are validated and when the prompt is rendered."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.include) ? !has(self.role) && !has(self.content) : has(self.role) && has(self.content)",
         "message": "a message has role and content, or only include"}]})

    role: Literal["system", "user", "assistant"] | None = None
    """Chat role."""
    content: str | None = None
    """Message text."""
    include: PartRef | None = None
    """Instead of role and content: the messages of another PromptVersion's part."""

    @model_validator(mode="after")
    def _shape(self) -> PromptMessage:
        if self.include is not None and (self.role is not None or self.content is not None):
            raise ValueError("a message with include has no role or content (the part's messages have theirs)")
        if self.include is None and (self.role is None or self.content is None):
            raise ValueError("a message needs role and content (or include)")
        return self


# equals holds any JSON value (no schema), which the API server's CEL cannot name: the CRD rule counts the
# others (at most one), the model (webhook, validate, the reconciler) checks exactly one of all seven.
_ONE_CHECK = " + ".join(f"(has(self.{k}) ? 1 : 0)" for k in (
    "cel", "jsonSchema", "contains", "regex", "range", "judge"))


class NumberRange(Model):
    """Bounds of a number (inclusive); at least one of min and max."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.min) || has(self.max)", "message": "a range needs min or max"}]})

    min: float | None = None
    """Lowest value that passes."""
    max: float | None = None
    """Highest value that passes."""

    @model_validator(mode="after")
    def _bounds(self) -> NumberRange:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class JudgeCheck(Model):
    """LLM-as-judge: the suite's judge Agent scores the output against a rubric, 0 to 1, through the gateway."""

    rubric: str = Field(min_length=1, max_length=8192)
    """What a good answer does; the judge is given the case's inputs, the output and this rubric."""
    min_score: float = Field(default=0.5, ge=0, le=1)
    """The judge's score (0 to 1) at or above which the assertion passes."""


class Assertion(Model):
    """One check of a case's output: exactly one of cel, jsonSchema, equals, contains, regex, range, judge.

    ``path`` picks the value equals/contains/regex/range/jsonSchema look at (a CEL expression over
    ``output`` and ``inputs``; default ``output``). contains and regex read a string value as it is and
    any other value as its JSON text. Every assertion scores 1 (pass) or 0, except judge (its score)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": _ONE_CHECK + " <= 1",
         "message": "an assertion needs exactly one of cel, jsonSchema, equals, contains, regex, range, judge"}]})

    cel: str | None = Field(default=None, min_length=1, max_length=4096)
    """CEL condition over ``output`` and ``inputs`` that must be true."""
    json_schema: dict[str, JSONValue] | None = None
    """JSON Schema the value must be valid against."""
    equals: JSONValue = None
    """The value must equal this (JSON equality; null cannot be asked for here: use cel)."""
    contains: str | None = Field(default=None, min_length=1)
    """The value's text must contain this."""
    regex: str | None = Field(default=None, min_length=1, max_length=1024)
    """The value's text must match this Python regular expression (re.search)."""
    range: NumberRange | None = None
    """The value must be a number within these bounds."""
    judge: JudgeCheck | None = None
    """LLM-as-judge with a rubric (needs the suite's judge)."""
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    """CEL expression giving the value checked (default: output); not with cel or judge."""

    @property
    def kind(self) -> str:
        return next(k for k in _CHECKS if getattr(self, k) is not None)

    @model_validator(mode="after")
    def _one_check(self) -> Assertion:
        given = [k for k in _CHECKS if getattr(self, k) is not None]
        if len(given) != 1:
            got = ", ".join(_ALIASES[k] for k in given) or "none"
            raise ValueError("an assertion needs exactly one of cel, jsonSchema, equals, contains, regex, range, "
                             f"judge (got {got})")
        if self.path is not None and given[0] in ("cel", "judge"):
            raise ValueError(f"path is not used by a {given[0]} assertion (a cel assertion reads output itself)")
        return self


_CHECKS = ("cel", "json_schema", "equals", "contains", "regex", "range", "judge")
_ALIASES = {"json_schema": "jsonSchema"} | {k: k for k in _CHECKS if k != "json_schema"}


class EvaluationCase(Model):
    """An example input with assertions on the output."""

    name: str = Field(min_length=1, max_length=253)
    """Case name (unique in the suite)."""
    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs the template is rendered with (checked against the inputSchema)."""
    assertions: list[Assertion] = Field(default_factory=list, max_length=64)
    """Checks of the output. The output must also satisfy the outputSchema (the step fails otherwise)."""


class Judge(Model):
    """The suite's judge: an Agent the gateway calls like any other, for judge assertions and pairwise runs."""

    agent_ref: LocalRef
    """The judge Agent (its model, budgets and audit are the gateway's as for any call)."""
    pairwise_against: LocalRef | None = None
    """Another PromptVersion: each case is also run with it and the judge says which output is better
    (the order shown to the judge is drawn from the case name, so neither version is always first)."""
    criteria: str = Field(default="Which output does the task better: correct, complete, concise, following the "
                          "instructions.", min_length=1, max_length=8192)
    """What the judge compares two outputs on (pairwise)."""
    min_win_rate: float | None = Field(default=None, ge=0, le=1)
    """With pairwiseAgainst: the suite fails when this version wins (ties count half) less than this share."""


class EvaluationSuite(Model):
    """The evaluation suite `agentflow prompt eval` runs: every case through the same executor and gateway as a
    run's llm step (the offline model without a provider key), then its assertions; the suite passes when
    the pass rate (and mean score, and pairwise win rate, when set) reach their minimums.

    On a cluster the operator runs it as a Workflow of its own (agentflow.k8s.evaluation): one llm step per
    case, judge and pairwise steps after it, each a sandboxed step pod whose calls go through the gateway
    and count against Budgets like any run's."""

    agent_ref: LocalRef
    """The Agent the cases run with (its model and instructions, as a step with this agentRef would)."""
    cases: list[EvaluationCase] = Field(min_length=1, max_length=1000)
    """The cases."""
    min_pass_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of cases that must pass (every assertion true and the output valid)."""
    min_mean_score: float | None = Field(default=None, ge=0, le=1)
    """Lowest mean of the cases' scores (a case's score is the mean of its assertions' scores)."""
    judge: Judge | None = None
    """The judge, for judge assertions and pairwise comparison."""
    budget_ref: LocalRef | None = None
    """A Budget the suite's calls count against besides those whose scope covers them (the evaluation Workflow's
    spec.budgetRef on a cluster, the synthetic run's locally). On a cluster every Budget of the namespace whose
    workflowSelector matches the evaluation Workflow's labels (agentflow.dev/evaluation: NAME) counts too."""

    @model_validator(mode="after")
    def _judged(self) -> EvaluationSuite:
        names: set[str] = set()
        for i, case in enumerate(self.cases):
            if case.name in names:
                raise ValueError(f"cases[{i}].name: duplicate case name {case.name!r}")
            names.add(case.name)
            if self.judge is None and any(a.judge is not None for a in case.assertions):
                raise ValueError(f"cases[{i}] ({case.name}) has a judge assertion: give the suite a judge "
                                 "(judge.agentRef)")
        if self.judge is not None and self.judge.min_win_rate is not None and self.judge.pairwise_against is None:
            raise ValueError("judge.minWinRate needs judge.pairwiseAgainst")
        return self


class Canary(Model):
    """This version as its family's candidate: ``weight`` percent of the runs whose steps refer to the family
    (promptRef.family) get it, chosen per run by a hash of the run id and the family (agentflow.prompts.rollout);
    the others get the baseline. One candidate per family. Nothing changes the weight by itself (no gates): a
    PromptRollout (agentflow.models.rollout) is the gated way, and a family has one or the other."""

    baseline: LocalRef
    """The family's stable PromptVersion (same spec.prompt), which takes the rest of the runs."""
    weight: int = Field(ge=0, le=100)
    """Percent of runs that get this version."""


class PromptVersionSpec(Model):
    """Desired state of a PromptVersion (immutable once created)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "spec is immutable: create a new PromptVersion for a new version",
                }
            ]
        }
    )

    prompt: str = Field(min_length=1)
    """Name of the prompt family this is a version of."""
    version: str = Field(min_length=1)
    """Version label, e.g. 1, 1.2.0."""
    messages: list[PromptMessage] = Field(min_length=1)
    """The chat template."""
    parts: dict[str, list[PromptMessage]] = Field(default_factory=dict)
    """Named parts other PromptVersions may include (messages, which may include parts in turn)."""
    input_schema: dict[str, JSONValue] | None = None
    """JSON Schema of the inputs."""
    output_schema: dict[str, JSONValue] | None = None
    """JSON Schema the model's output must satisfy (the output is parsed as JSON when given)."""
    evaluations: EvaluationSuite | None = None
    """The evaluation suite (cases, assertions, judge, thresholds). `agentflow prompt eval NAME -f MANIFESTS` runs
    it locally (results in the state dir); on a cluster the operator runs it when the PromptVersion is created
    and again whenever the annotation agentflow.dev/evaluate gets a new value (`agentflow prompt eval NAME
    --cluster`), as a Workflow of sandboxed step pods; results in PostgreSQL and on status.evaluation."""
    canary: Canary | None = None
    """Makes this version its family's candidate for a share of runs (see Canary)."""


class RolloutPlace(Model):
    """Where this version stands in its family's rollout (agentflow.prompts.rollout), kept by the operator."""

    family: str
    """The family (spec.prompt)."""
    role: Literal["stable", "candidate", "inactive"]
    """stable (the rest of the runs), candidate (spec.canary), or inactive (no runs unless pinned)."""
    weight: int = Field(ge=0, le=100)
    """Percent of the family's runs that get this version."""
    stable: str
    """The family's stable PromptVersion."""
    candidate: str | None = None
    """The family's candidate PromptVersion, if any."""


class EvaluationStatus(Model):
    """The newest evaluation of the suite on the cluster (agentflow.services.evaluations), kept by the operator."""

    phase: Literal["Pending", "Running", "Passed", "Failed", "Error"]
    """Pending (its Workflow created), Running, Passed or Failed (the suite against its thresholds), Error (it
    could not be run or concluded: message says why)."""
    workflow: str | None = None
    """The evaluation Workflow (label agentflow.dev/evaluation: this PromptVersion's name)."""
    trigger: str = ""
    """The agentflow.dev/evaluate annotation value it ran for ("" for the run at creation)."""
    pass_rate: float | None = None
    """Share of the cases that passed."""
    mean_score: float | None = None
    """Mean of the cases' scores (0 to 1)."""
    win_rate: float | None = None
    """With judge.pairwiseAgainst: the share of cases this version won (ties count half)."""
    cases: int | None = None
    """Cases run."""
    passed_cases: int | None = None
    """Cases that passed."""
    cost_usd: float | None = None
    """What the suite's model calls cost (cases, judges, the other version), US dollars."""
    input_tokens: int | None = None
    """Prompt tokens of those calls."""
    output_tokens: int | None = None
    """Completion tokens of those calls."""
    latency_p50_seconds: float | None = None
    """Median latency of a case (its calls' latencies summed)."""
    started_at: str | None = None
    """When the evaluation Workflow was created."""
    finished_at: str | None = None
    """When the evaluation concluded."""
    message: str | None = None
    """The thresholds missed, or why it could not run."""


class PromptVersionStatus(ResourceStatus):
    """Observed state of a PromptVersion."""

    rollout: RolloutPlace | None = None
    """Its place in the family's rollout."""
    evaluation: EvaluationStatus | None = None
    """The newest evaluation of its suite on the cluster."""


class PromptVersion(Model):
    """A PromptVersion: an immutable, versioned prompt template with input/output schemas and evaluations."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["PromptVersion"] = "PromptVersion"
    metadata: ObjectMeta
    spec: PromptVersionSpec
    status: PromptVersionStatus | None = None
