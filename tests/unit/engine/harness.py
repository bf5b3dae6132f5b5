"""A synchronous, virtual-time driver for engine tests.

It does what the local runner does (decide, journal, start attempts, feed
results back) but with a scripted executor and a clock that jumps straight to
the next thing that happens, so retries, backoff and timeouts are tested in
microseconds of real time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import yaml

from agentflow.engine.plan import Plan, compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import Decision, Event, EventType, StepError, StepRequest, StepResult
from agentflow.models import Workflow

# behaviour(request) -> (duration seconds, result)
Behaviour = Callable[[StepRequest], tuple[float, StepResult]]


def ok(output: Any = None, duration: float = 1.0) -> tuple[float, StepResult]:
    return duration, StepResult(output=output)


def fail(type_: str = "Boom", message: str = "it broke", retryable: bool = True,
         duration: float = 1.0) -> tuple[float, StepResult]:
    return duration, StepResult(error=StepError(type_, message, retryable))


def echo(request: StepRequest) -> tuple[float, StepResult]:
    return ok({"node": request.node, "inputs": dict(request.inputs)})


def workflow(text: str) -> Workflow:
    body = yaml.safe_load(text)
    body.setdefault("apiVersion", "agentflow.dev/v1alpha1")
    body.setdefault("kind", "Workflow")
    body.setdefault("metadata", {"name": "test"})
    return Workflow.model_validate(body)


def plan(text: str) -> Plan:
    return compile_plan(workflow(text))


class Harness:
    def __init__(self, plan: Plan, behaviour: Behaviour = echo, *, run_id: str = "run-1", seed: int = 7,
                 start: float = 1000.0, events: list[Event] | None = None) -> None:
        self.plan = plan
        self.behaviour = behaviour
        self.now = start
        self.events: list[Event] = []
        self.executed: list[tuple[str, int]] = []
        self.requests: list[StepRequest] = []
        self.cancelled: list[str] = []
        self._pending: list[tuple[float, int, str, int, StepResult]] = []
        self._seq = 0
        if events:
            self.run = Run.resume(plan, run_id, events)
            self.events = list(events)
            for request in self.run.in_flight():
                self._start(request)
        else:
            self.run = Run(plan, run_id, seed)

    def _start(self, request: StepRequest) -> None:
        self.executed.append((request.node, request.attempt))
        self.requests.append(request)
        duration, result = self.behaviour(request)
        self._seq += 1
        heapq.heappush(self._pending, (self.now + duration, self._seq, request.node, request.attempt, result))

    def post(self, type_: EventType, node: str | None = None, **data: Any) -> None:
        """An event from outside the engine (an approval, a cancel)."""
        event = Event(type_, node, data, self.now)
        self.run.apply(event)
        self.events.append(event)

    def decide(self) -> Decision:
        """One decision, acted upon, without moving the clock."""
        decision = self.run.decide(self.now)
        self.events.extend(decision.events)
        for request in decision.start:
            self._start(request)
        for node in decision.cancel:
            self.cancelled.append(node)
            self._pending = [p for p in self._pending if p[2] != node]
            heapq.heapify(self._pending)
        return decision

    def running(self) -> int:
        return sum(1 for n in self.run.nodes.values() if n.phase == "Running")

    def step(self) -> bool:
        """One decide and one jump of the clock to what happens next. False when stuck or done."""
        decision = self.decide()
        if decision.finished:
            return False
        times = [t for t in (self._pending[0][0] if self._pending else None, decision.wake_at) if t is not None]
        if not times:
            return False
        self.now = max(self.now, min(times))
        while self._pending and self._pending[0][0] <= self.now:
            _, _, node, attempt, result = heapq.heappop(self._pending)
            if result.ok:
                event = Event(EventType.step_succeeded, node, {"attempt": attempt, "output": result.output}, self.now)
            else:
                assert result.error is not None
                event = Event(EventType.step_failed, node, {"attempt": attempt, "error": result.error.to_dict()},
                              self.now)
            self.run.apply(event)
            self.events.append(event)
        return True

    def run_until_blocked(self, limit: int = 100_000) -> Run:
        for _ in range(limit):
            if not self.step():
                break
        return self.run

    def types(self, node: str | None = None) -> list[str]:
        return [e.type.value for e in self.events if node is None or e.node == node]
