"""What one run says about the version of a prompt family it got: the samples a PromptRollout's gates test
(PURE; agentflow.services.canary reads the runs from the journal, agentflow.prompts.canary decides).

The run's version of the family is the one RunStarted recorded (``prompts``: agentflow.prompts.rollout), for
its steps that followed the rollout (a step pinned to a version, ``reason: pinned``, is not part of the split
and says nothing). The signals, named as a PromptRollout's onlineGates name them::

    stepFailureRate     per ended attempt of those steps: 1 failed or timed out, else 0
    schemaFailureRate   per ended attempt: 1 the answer broke the outputSchema (agentflow.quality.signals)
    latencySeconds      per ended attempt: StepScheduled to its end
    judgeScore          per success whose StepSucceeded carries a numeric score (0..1)
    costPerRun          per finished run (RunFinished): US dollars of the model calls of those steps

The attempts are read by agentflow.quality.signals.SignalTracker, so a rollout and drift watch the same things.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ..engine.values import Event, EventType
from .signals import SignalTracker

__all__ = ["RunSample", "run_sample"]

_SIGNAL_NAMES = {"failure": "stepFailureRate", "schema_failure": "schemaFailureRate",
                 "latency_seconds": "latencySeconds", "score": "judgeScore"}


@dataclasses.dataclass(frozen=True, slots=True)
class RunSample:
    """One run's evidence about the version it got."""

    version: str
    started_at: float
    attempts: int
    """Ended attempts of the family's steps (a run with none says nothing yet)."""
    values: Mapping[str, tuple[float, ...]]
    """Samples by signal name (stepFailureRate, ...)."""


def _family_steps(started: Mapping[str, Any], family: str) -> dict[str, str]:
    raw = started.get("prompts") or {}
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, str] = {}
    for step, choice in raw.items():
        if isinstance(choice, Mapping) and choice.get("family") == family and choice.get("reason") != "pinned" \
                and choice.get("name"):
            out[str(step)] = str(choice["name"])
    return out


def run_sample(run: str, family: str, events: Iterable[Event]) -> RunSample | None:
    """The run's sample for ``family``, or None when the run did not follow the family's rollout (events in
    journal order, RunStarted first; other event types may be left out)."""
    it = iter(events)
    first = next(it, None)
    if first is None or first.type is not EventType.run_started:
        return None
    steps = _family_steps(first.data, family)
    versions = set(steps.values())
    if len(versions) != 1:  # none, or (a family followed by steps of one run always gets one version) corrupt
        return None
    version = versions.pop()
    subjects = {step: ("", version) for step in steps}
    tracker = SignalTracker()
    values: dict[str, list[float]] = {name: [] for name in (*_SIGNAL_NAMES.values(), "costPerRun")}
    nodes: dict[str, bool] = {}
    cost, finished, attempts = 0.0, False, 0
    for e in it:
        if e.type is EventType.step_scheduled and e.node is not None:
            nodes[e.node] = str(e.data.get("step")) in subjects and e.data.get("kind") == "llm"
        elif e.type is EventType.cost_recorded and nodes.get(str(e.node)):
            call = e.data.get("call")
            if isinstance(call, Mapping) and call.get("kind", "llm") == "llm":
                amount = call.get("cost_usd")
                if isinstance(amount, int | float) and not isinstance(amount, bool) and amount > 0:
                    cost += float(amount)
        elif e.type is EventType.run_finished:
            finished = True
        for o in tracker.observe(run, "", subjects, [e]):
            name = _SIGNAL_NAMES.get(o.signal)
            if name is not None:
                values[name].append(o.value)
                attempts += o.signal == "failure"
    if finished and attempts:
        values["costPerRun"].append(cost)
    return RunSample(version, first.at, attempts, {k: tuple(v) for k, v in values.items()})
