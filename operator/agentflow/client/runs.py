"""A run as an application sees it, from either driver, and its progress as events (pure).

:class:`RunResult` is one look at a run: its phase, outputs, cost and the phase of each step. The cluster client
reads it from the Workflow's status (:func:`result_of_status`), the local client from the run's journal through the
engine (:func:`result_of_run`). :func:`changes` compares two looks and says what happened in between, as
:class:`RunEvent` values: the same events whichever driver ran the run, so an application streams them the same
way. A poll sees the state, not every transition: a step that started and finished between two looks shows as
one event from its old phase to its new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from ..engine.run import Run

__all__ = ["FINISHED", "RunEvent", "RunResult", "StepState", "changes", "result_of_run", "result_of_status"]

FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})
"""The phases a run ends in."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepState:
    """One step (a DAG step, a fan-out item, a state visit) as last seen."""

    phase: str
    """Pending, Running, Waiting, Retrying, Succeeded, Failed, Skipped or Cancelled."""
    message: str | None = None
    """Why it failed or was skipped."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """One look at a run."""

    run: str
    """The run's name: the Workflow's on a cluster, the run id locally."""
    phase: str
    """Pending, Running, Waiting (for a human's approval), Suspended, Succeeded, Failed or Cancelled."""
    outputs: Mapping[str, Any] | None = None
    """The run's outputs (spec.outputs), once it has finished."""
    cost_usd: float = 0.0
    """What its model and tool calls cost so far, US dollars."""
    tokens: int = 0
    """Tokens of its model calls so far."""
    message: str | None = None
    """Why it is in its phase (the error that failed it, who cancelled it)."""
    steps: Mapping[str, StepState] = dataclasses.field(default_factory=dict)
    """Each step by node id (``draft``, ``map[2]``, ``review#1``), in the order they appeared."""

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what the console's ``GET /api/runs/{run}/result`` answers)."""
        return {"run": self.run, "phase": self.phase, "outputs": dict(self.outputs) if self.outputs is not None
                else None, "costUsd": self.cost_usd, "tokens": self.tokens, "message": self.message,
                "steps": {node: {"phase": s.phase, "message": s.message} for node, s in self.steps.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The JSON form read back; ValueError naming the field that is not what it should be."""
        if not isinstance(data.get("run"), str) or not isinstance(data.get("phase"), str):
            raise ValueError("run and phase: expected strings")
        outputs, steps = data.get("outputs"), data.get("steps") or {}
        if outputs is not None and not isinstance(outputs, Mapping):
            raise ValueError("outputs: expected an object or null")
        if not isinstance(steps, Mapping) or not all(isinstance(v, Mapping) for v in steps.values()):
            raise ValueError("steps: expected an object of {phase, message}")
        return cls(run=data["run"], phase=data["phase"], outputs=outputs, cost_usd=float(data.get("costUsd") or 0),
                   tokens=int(data.get("tokens") or 0), message=data.get("message"),
                   steps={str(k): StepState(str(v.get("phase") or "Pending"), v.get("message"))
                          for k, v in steps.items()})

    def failed_step(self) -> tuple[str, str | None] | None:
        """The first failed step and its message, or None."""
        for node, step in self.steps.items():
            if step.phase == "Failed":
                return node, step.message
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class RunEvent:
    """Something that changed between two looks at a run."""

    kind: Literal["run", "step"]
    """run: the run's phase changed; step: a step's did."""
    phase: str
    """The new phase."""
    previous: str | None = None
    """The phase before (None: not seen before)."""
    step: str | None = None
    """The step (node id), for kind step."""
    message: str | None = None
    """Why (a failed step's error, a finished run's reason)."""
    result: RunResult | None = None
    """The run as seen with this event (set on run events)."""

    def __str__(self) -> str:
        what = f"step {self.step}" if self.kind == "step" else "run"
        extra = f": {self.message}" if self.message else ""
        return f"{what} {self.previous or '-'} -> {self.phase}{extra}"


def changes(before: RunResult | None, after: RunResult) -> list[RunEvent]:
    """What happened between two looks (``before`` None: the first look): steps first, in the order they
    appeared, then the run's phase, so a run's final event comes after the steps that ended it."""
    out: list[RunEvent] = []
    seen = before.steps if before is not None else {}
    for node, step in after.steps.items():
        old = seen.get(node)
        if old is None or old.phase != step.phase:
            out.append(RunEvent("step", step.phase, old.phase if old else None, node, step.message))
    if before is None or before.phase != after.phase:
        out.append(RunEvent("run", after.phase, before.phase if before else None, None,
                            after.message if after.phase != "Running" else None, after))
    return out


def result_of_status(name: str, status: Mapping[str, Any] | None) -> RunResult:
    """A Workflow's status as a RunResult (a Workflow the operator has not seen yet is Pending)."""
    status = status or {}
    nodes = status.get("nodes") if isinstance(status.get("nodes"), Mapping) else {}
    steps = {str(node): StepState(str(value.get("phase") or "Pending"), value.get("message"))
             for node, value in (nodes or {}).items() if isinstance(value, Mapping)}
    outputs = status.get("outputs")
    return RunResult(
        run=name, phase=str(status.get("phase") or "Pending"),
        outputs=outputs if isinstance(outputs, Mapping) else None,
        cost_usd=float(status.get("costUsd") or 0.0), tokens=int(status.get("tokens") or 0),
        message=status.get("message"), steps=steps)


def result_of_run(run: Run) -> RunResult:
    """The engine's state of a local run as a RunResult (its top-level nodes: an agent loop's turns and tool
    calls are inside their step)."""
    steps: dict[str, StepState] = {}
    for node in run.nodes.values():
        if node.parent is not None:
            continue
        message = node.message or (node.error.message if node.error is not None else None)
        steps[node.id] = StepState(node.phase, message)
    return RunResult(run=run.run_id, phase=run.shown_phase, outputs=run.outputs, cost_usd=round(run.cost_usd, 6),
                     tokens=run.tokens, message=run.reason, steps=steps)
