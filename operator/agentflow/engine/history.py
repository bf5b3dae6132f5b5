"""Reading a finished journal: what happened to each node, and diffs between runs.

Pure functions over lists of events, so `agentflow diff`, replay checks and
the operator's status builder share them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from .values import CallRecord, Event, EventType, StepError, StepResult, call_tokens

E = EventType
TERMINAL_EVENTS = {
    E.step_succeeded: "Succeeded", E.step_failed: "Failed", E.step_skipped: "Skipped", E.step_cancelled: "Cancelled",
}


@dataclasses.dataclass
class NodeHistory:
    node: str
    phase: str = "Pending"
    attempts: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.first_at is None or self.last_at is None:
            return None
        return self.last_at - self.first_at


@dataclasses.dataclass
class RunHistory:
    path: list[str]
    nodes: dict[str, NodeHistory]
    phase: str | None
    outputs: Any
    reason: str | None
    cost_usd: float
    tokens: int
    started_at: float | None
    finished_at: float | None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


def history(events: Iterable[Event]) -> RunHistory:
    nodes: dict[str, NodeHistory] = {}
    path: list[str] = []
    phase = outputs = reason = None
    started = finished = None
    cost = 0.0
    tokens = 0
    for ev in events:
        if ev.type is E.run_started:
            started = ev.at
        elif ev.type is E.run_finished:
            phase, outputs, reason = ev.data.get("phase"), ev.data.get("outputs"), ev.data.get("reason")
            finished = ev.at
        if ev.node is None or ev.type in (E.fan_out, E.state_entered):
            continue
        h = nodes.get(ev.node)
        if h is None:
            h = nodes[ev.node] = NodeHistory(ev.node)
            path.append(ev.node)
        if h.first_at is None:
            h.first_at = ev.at
        if ev.type in (E.step_scheduled, E.loop_started, E.plan_started):
            h.attempts = int(ev.data.get("attempt", h.attempts))
            h.phase = "Running"
        elif ev.type in (E.loop_finished, E.plan_finished):
            h.phase = str(ev.data.get("phase", h.phase))
            h.last_at = ev.at
            h.output = ev.data.get("output")
            if ev.data.get("error"):
                h.error = dict(ev.data["error"])
        elif ev.type is E.approval_requested:
            h.phase = "Waiting"
        elif ev.type is E.cost_recorded:
            call = ev.data.get("call", {})
            c = float(call.get("cost_usd", 0.0))
            t = call_tokens(call)
            h.cost_usd += c
            h.tokens += t
            cost += c
            tokens += t
        elif ev.type in TERMINAL_EVENTS:
            h.phase = TERMINAL_EVENTS[ev.type]
            h.last_at = ev.at
            if "output" in ev.data:
                h.output = ev.data["output"]
            if ev.type is E.step_failed:
                h.error = dict(ev.data.get("error", {}))
        elif ev.type is E.approval_decided:
            h.output = {"approved": ev.data.get("approved"), "by": ev.data.get("by"), "reason": ev.data.get("reason")}
            h.phase = "Succeeded" if ev.data.get("approved") else "Failed"
            h.last_at = ev.at
        elif ev.type is E.retry_scheduled:
            h.phase = "Retrying"
    return RunHistory(path, nodes, phase, outputs, reason, cost, tokens, started, finished)


def recorded_results(events: Sequence[Event]) -> dict[tuple[str, int], tuple[float, StepResult | None]]:
    """(node, attempt) -> (seconds the attempt took, its result), from a journal.

    An attempt that never reported (it timed out, was cancelled or was in
    flight when the journal ends) maps to None.
    """
    scheduled: dict[tuple[str, int], float] = {}
    calls: dict[tuple[str, int], list[CallRecord]] = {}
    out: dict[tuple[str, int], tuple[float, StepResult | None]] = {}
    for ev in events:
        if ev.node is None:
            continue
        if ev.type is E.step_scheduled:
            key = (ev.node, int(ev.data["attempt"]))
            scheduled[key] = ev.at
            out[key] = (0.0, None)
            continue
        attempt = ev.data.get("attempt")
        if attempt is None:
            continue
        key = (ev.node, int(attempt))
        if key not in scheduled:
            continue
        if ev.type is E.cost_recorded:
            calls.setdefault(key, []).append(CallRecord.from_dict(ev.data.get("call", {})))
        elif ev.type is E.step_succeeded:
            out[key] = (ev.at - scheduled[key], StepResult(output=ev.data.get("output"),
                                                           calls=tuple(calls.get(key, ()))))
        elif ev.type is E.step_failed:
            out[key] = (ev.at - scheduled[key], StepResult(
                output=ev.data.get("output"), error=StepError.from_dict(ev.data.get("error", {})),
                calls=tuple(calls.get(key, ()))))
    return out


@dataclasses.dataclass
class NodeChange:
    node: str
    field: str
    before: Any
    after: Any


@dataclasses.dataclass
class RunDiff:
    only_in_a: list[str]
    only_in_b: list[str]
    changes: list[NodeChange]
    phase: tuple[Any, Any]
    outputs: tuple[Any, Any]
    cost_usd: tuple[float, float]
    seconds: tuple[float | None, float | None]

    @property
    def same_path_and_outputs(self) -> bool:
        return (not self.only_in_a and not self.only_in_b and self.phase[0] == self.phase[1]
                and self.outputs[0] == self.outputs[1]
                and not [c for c in self.changes if c.field in ("phase", "output", "attempts")])

    def to_dict(self) -> dict[str, Any]:
        return {
            "samePathAndOutputs": self.same_path_and_outputs,
            "onlyInA": self.only_in_a, "onlyInB": self.only_in_b,
            "changes": [dataclasses.asdict(c) for c in self.changes],
            "phase": list(self.phase), "outputs": list(self.outputs),
            "costUsd": list(self.cost_usd), "seconds": list(self.seconds),
        }


def diff(a: RunHistory, b: RunHistory, *, timing: bool = True) -> RunDiff:
    changes: list[NodeChange] = []
    for node in a.path:
        if node not in b.nodes:
            continue
        x, y = a.nodes[node], b.nodes[node]
        for field in ("phase", "attempts", "output", "cost_usd", "tokens"):
            if getattr(x, field) != getattr(y, field):
                changes.append(NodeChange(node, field, getattr(x, field), getattr(y, field)))
        if timing and x.seconds is not None and y.seconds is not None and abs(x.seconds - y.seconds) > 0.001:
            changes.append(NodeChange(node, "seconds", round(x.seconds, 3), round(y.seconds, 3)))
    return RunDiff(
        only_in_a=[n for n in a.path if n not in b.nodes],
        only_in_b=[n for n in b.path if n not in a.nodes],
        changes=changes,
        phase=(a.phase, b.phase),
        outputs=(a.outputs, b.outputs),
        cost_usd=(round(a.cost_usd, 6), round(b.cost_usd, 6)),
        seconds=(a.seconds, b.seconds),
    )


def where_they_differ(a: str, b: str, width: int = 80) -> tuple[str, str]:
    """``a`` and ``b`` cut to ``width`` characters around their first difference (``...`` where cut), so two
    long values that share a prefix still show what changed. Equal texts are cut from their start."""
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = 0 if first < width // 2 else first - width // 4

    def cut(text: str) -> str:
        piece = text[start:start + width]
        return ("..." if start else "") + piece + ("..." if start + width < len(text) else "")

    return cut(a), cut(b)
