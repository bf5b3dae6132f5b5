"""Deterministic replay and what-if runs.

``replay_exact`` re-runs a journal through the engine in virtual time: every
attempt gets the output it got the first time, after the time it took the
first time; approvals and cancels arrive when they arrived. No model or tool
is called. The replayed run must take the same path to the same outputs;
any difference is a divergence (a bug, or an engine change that breaks
determinism).

``WhatIfExecutor`` serves recorded results for the part of the run before a
chosen step and calls the live executor from that step on, so a run can be
re-done with a changed prompt or input without paying again for what did not
change.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

from ..engine.history import RunDiff, diff, history, recorded_results
from ..engine.plan import Plan
from ..engine.run import Run
from ..engine.values import Event, EventType, Executor, StepRequest, StepResult

EXTERNAL = (EventType.approval_decided, EventType.cancel_requested, EventType.suspended, EventType.resumed)


class ReplayError(Exception):
    """The journal cannot be replayed (empty, or of another workflow)."""


def replay_exact(plan: Plan, run_id: str, events: Sequence[Event]) -> tuple[Run, list[Event], RunDiff]:
    """Replay a journal in virtual time; returns the replayed run, its events, and the diff."""
    if not events or events[0].type is not EventType.run_started:
        raise ReplayError("the journal does not start with RunStarted; nothing to replay")
    started = events[0]
    if started.data.get("specHash") not in (None, plan.spec_hash):
        raise ReplayError("the workflow spec differs from the one the run was started with; "
                          "use a what-if run (--from-step) to run a changed spec")
    if "parallelism" in started.data:  # the cap the run started with, whatever the runner's is now
        parallelism = started.data["parallelism"]
        plan = dataclasses.replace(plan, parallelism=int(parallelism) if parallelism is not None else None)
    recorded = recorded_results(events)
    external = sorted(((e.at, i, e) for i, e in enumerate(events) if e.type in EXTERNAL), key=lambda t: t[:2])
    run = Run(plan, run_id, int(started.data.get("seed", 0)))
    out: list[Event] = []
    now = started.at
    pending: list[tuple[float, int, StepRequest, StepResult]] = []
    seq = 0
    ext = 0
    for _ in range(1_000_000):
        while ext < len(external) and external[ext][0] <= now:
            event = external[ext][2]
            run.apply(event)
            out.append(event)
            ext += 1
        decision = run.decide(now)
        out.extend(decision.events)
        for node in decision.cancel:
            pending = [p for p in pending if p[2].node != node]
            heapq.heapify(pending)
        for request in decision.start:
            duration, result = recorded.get((request.node, request.attempt), (0.0, None))
            if result is not None:
                seq += 1
                heapq.heappush(pending, (now + duration, seq, request, result))
            out.append(Event(EventType.step_started, request.node, {"attempt": request.attempt}, now))
        if decision.finished:
            break
        candidates = [t for t in (pending[0][0] if pending else None, decision.wake_at,
                                  external[ext][0] if ext < len(external) else None) if t is not None]
        if not candidates:
            break
        now = max(now, min(candidates))
        while pending and pending[0][0] <= now:
            _, _, request, result = heapq.heappop(pending)
            for call in result.calls:
                event = Event(EventType.cost_recorded, request.node, {"attempt": request.attempt,
                                                                       "call": call.to_dict()}, now)
                run.apply(event)
                out.append(event)
            if result.ok:
                event = Event(EventType.step_succeeded, request.node,
                              {"attempt": request.attempt, "output": result.output}, now)
            else:
                assert result.error is not None
                data = {"attempt": request.attempt, "error": result.error.to_dict()}
                if result.output is not None:
                    data["output"] = result.output
                event = Event(EventType.step_failed, request.node, data, now)
            run.apply(event)
            out.append(event)
    return run, out, diff(history(events), history(out), timing=False)


class WhatIfExecutor:
    """Recorded results before the chosen step, live calls from it on."""

    def __init__(self, events: Sequence[Event], live: Executor, plan: Plan, from_step: str) -> None:
        self.recorded = recorded_results(events)
        self.live = live
        self.from_step = from_step
        self.live_steps = _descendants(plan, from_step)
        self.went_live = False
        self.live_calls: list[str] = []

    def _is_live(self, request: StepRequest) -> bool:
        if request.step == self.from_step:
            self.went_live = True
        if self.live_steps is None:  # a state machine: everything from the first visit of the state on
            return self.went_live
        return request.step in self.live_steps

    async def execute(self, request: StepRequest) -> StepResult:
        if not self._is_live(request):
            _, result = self.recorded.get((request.node, request.attempt), (0.0, None))
            if result is not None:
                return result
        self.live_calls.append(request.node)
        return await self.live.execute(request)

    async def aclose(self) -> None:
        close = getattr(self.live, "aclose", None)
        if close is not None:
            await close()


def _descendants(plan: Plan, step: str) -> set[str] | None:
    if plan.mode != "dag":
        return None
    out = {step}
    stack = [step]
    while stack:
        for dep in plan.steps[stack.pop()].dependents:
            if dep not in out:
                out.add(dep)
                stack.append(dep)
    # exit handlers run after everything, so they see the changed results too
    out.update(name for name, p in plan.steps.items() if p.deferred)
    return out
