"""Quality signals of an Agent × PromptVersion, read from a run's journal events (PURE).

One :class:`Observation` per signal each time an attempt of an ``llm`` step ends (StepSucceeded, StepFailed,
StepTimedOut; a cancelled attempt says nothing about quality)::

    failure               1 if the attempt failed or timed out, else 0
    schema_failure        1 if it failed because the answer broke the PromptVersion's outputSchema after its
                          repairs (InvalidModelOutput) or the schema itself is broken (InvalidOutputSchema), else 0
    repaired              1 if it needed a repair request (more than one model call: llm_step asks again with the
                          validation error), else 0
    latency_seconds       StepScheduled to its end
    cost_per_success_usd  on a success: the dollars of every model call of this Agent × PromptVersion since its
                          previous success, failed attempts included (what one good answer costs)
    score                 on a success whose StepSucceeded carries a numeric ``score`` (an evaluator's or a
                          judge's, 0..1): that score. The shipped executors record none, so it is absent today

Agent-loop steps are not attempts of one call: their turns and tool calls (nodes ``STEP/t1``, ``STEP/t1/call-1``)
are left out. State is kept per run until RunFinished (or :meth:`SignalTracker.forget`), and the cost since the
last success per Agent × PromptVersion across runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from ..engine.plan import Plan, StepPlan
from ..engine.values import Event, EventType

__all__ = ["RATE_SIGNALS", "SIGNALS", "VALUE_SIGNALS", "Observation", "SignalTracker", "Subject", "llm_subjects"]

RATE_SIGNALS = ("failure", "schema_failure", "repaired")
"""0/1 signals: the test watches their rate."""
VALUE_SIGNALS = ("latency_seconds", "cost_per_success_usd", "score")
"""Signals with a value: the test watches their level (score: a drop; the others: a rise)."""
SIGNALS = RATE_SIGNALS + VALUE_SIGNALS
SCHEMA_ERRORS = frozenset({"InvalidModelOutput", "InvalidOutputSchema"})
_ENDS = {EventType.step_succeeded, EventType.step_failed, EventType.step_timed_out}


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Subject:
    """What quality is tracked for: an Agent with one PromptVersion, in a namespace."""

    namespace: str
    agent: str
    prompt: str


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    subject: Subject
    signal: str
    value: float


def _pair(step: StepPlan, chosen: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """The step's (Agent, PromptVersion): the version a family step got this run (``chosen``, from Plan.prompts),
    so a canary's runs and the stable version's are watched apart."""
    spec = step.spec
    if spec.agent_ref is None or spec.prompt_ref is None or step.kind.value != "llm":
        return None
    prompt = spec.prompt_ref.name or (str(chosen["name"]) if chosen and chosen.get("name") else None)
    return None if prompt is None else (spec.agent_ref.name, prompt)


def llm_subjects(plan: Plan) -> dict[str, tuple[str, str]]:
    """(Agent, PromptVersion) of each llm step, by the name StepScheduled records (a DAG step's, a state's, a
    behavior tree leaf's)."""
    out: dict[str, tuple[str, str]] = {}
    for name, step in plan.steps.items():
        pair = _pair(step, plan.prompts.get(name))
        if pair is not None:
            out[name] = pair
    for name, state in plan.states.items():
        pair = _pair(state.step, plan.prompts.get(name)) if state.step is not None else None
        if pair is not None:
            out[name] = pair
    for name, step in plan.leaves.items():
        pair = _pair(step, plan.prompts.get(name))
        if pair is not None:
            out[name] = pair
    return out


@dataclasses.dataclass(slots=True)
class _Attempt:
    subject: Subject
    at: float
    calls: int = 0


class SignalTracker:
    """Turns journal events into :class:`Observation` s, one run's events at a time, in journal order."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, _Attempt]] = {}
        self._spent: dict[Subject, float] = {}

    def observe(self, run: str, namespace: str, subjects: Mapping[str, tuple[str, str]],
                events: Iterable[Event]) -> list[Observation]:
        """What ``events`` (appended to ``run``, in order) say; ``subjects`` is :func:`llm_subjects` of its plan."""
        open_ = self._runs.setdefault(run, {})
        out: list[Observation] = []
        for e in events:
            node = e.node
            if e.type is EventType.run_finished:
                self._runs.pop(run, None)
                open_ = {}
                continue
            if node is None or "/" in node:
                continue
            if e.type is EventType.step_scheduled:
                pair = subjects.get(str(e.data.get("step")))
                if pair is not None and e.data.get("kind") == "llm":
                    open_[node] = _Attempt(Subject(namespace, *pair), e.at)
            elif e.type is EventType.cost_recorded:
                attempt = open_.get(node)
                call = e.data.get("call")
                if attempt is not None and isinstance(call, Mapping) and call.get("kind", "llm") == "llm":
                    attempt.calls += 1
                    self._spent[attempt.subject] = self._spent.get(attempt.subject, 0.0) + _number(
                        call.get("cost_usd"))
            elif e.type in _ENDS:
                attempt = open_.pop(node, None)
                if attempt is not None:
                    out += self._ended(attempt, e)
            elif e.type is EventType.step_cancelled:
                open_.pop(node, None)
        return out

    def _ended(self, attempt: _Attempt, e: Event) -> list[Observation]:
        s = attempt.subject
        ok = e.type is EventType.step_succeeded
        error = e.data.get("error") if not ok else None
        error_type = str(error.get("type", "")) if isinstance(error, Mapping) else ""
        out = [Observation(s, "failure", 0.0 if ok else 1.0),
               Observation(s, "schema_failure", 1.0 if error_type in SCHEMA_ERRORS else 0.0),
               Observation(s, "repaired", 1.0 if attempt.calls > 1 else 0.0),
               Observation(s, "latency_seconds", max(0.0, e.at - attempt.at))]
        if ok:
            out.append(Observation(s, "cost_per_success_usd", self._spent.pop(s, 0.0)))
            score = e.data.get("score")
            if _is_number(score):
                out.append(Observation(s, "score", float(score)))
        return out

    def forget(self, run: str) -> None:
        self._runs.pop(run, None)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN is not


def _number(value: Any) -> float:
    return float(value) if _is_number(value) and value > 0 else 0.0
