"""Runs driven by the pure engine for status and event tests, described as plain data (YAML cases).

A run description::

    workflow: |              the Workflow manifest (spec at least), as in tests/unit/engine
    start: 1700000000        virtual start time (seconds)
    outcomes:                per node id (or step name): what each attempt does
      classify: {output: {label: spam}, duration: 2, costUsd: 0.01, tokens: 120}
      flaky: [{fail: {type: Boom, message: it broke}}, {output: ok}]   one per attempt, the last repeats
    steps: 3                 stop after this many decide/advance rounds (default: until blocked)
    then:                    afterwards, in order: an event posted, then rounds (``steps``, default until
                             blocked); or ``decide: once``, one decision acted on without moving the clock
      - {type: ApprovalDecided, node: gate, data: {approved: true, by: alice}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentflow.engine.plan import Plan
from agentflow.engine.run import Run
from agentflow.engine.values import CallRecord, EventType, StepError, StepRequest, StepResult

from ..engine.harness import Harness, plan

START = 1_700_000_000.0


class PodHarness(Harness):
    """The engine harness, plus what the operator journals when a pod starts: StepStarted and costs."""

    def __init__(self, plan: Plan, outcomes: Mapping[str, Any], *, start: float) -> None:
        self.outcomes = outcomes
        super().__init__(plan, self.behave, start=start)

    def outcome(self, request: StepRequest) -> Mapping[str, Any]:
        found = self.outcomes.get(request.node, self.outcomes.get(request.step))
        if isinstance(found, list):
            found = found[min(request.attempt, len(found)) - 1]
        return found if isinstance(found, Mapping) else {"output": {"node": request.node}}

    def behave(self, request: StepRequest) -> tuple[float, StepResult]:
        spec = self.outcome(request)
        duration = float(spec.get("duration", 1.0))
        if "fail" in spec:
            f = spec["fail"]
            error = StepError(f.get("type", "Boom"), f.get("message", "it broke"), f.get("retryable", True))
            return duration, StepResult(error=error)
        return duration, StepResult(output=spec.get("output"))

    def _start(self, request: StepRequest) -> None:
        super()._start(request)
        self.post(EventType.step_started, request.node, attempt=request.attempt, executor="pod")
        spec = self.outcome(request)
        if "costUsd" in spec or "tokens" in spec:
            call = CallRecord("llm", "offline", "0" * 64, None, int(spec.get("tokens", 0)), 0,
                              float(spec.get("costUsd", 0.0)))
            self.post(EventType.cost_recorded, request.node, call=call.to_dict())


def drive(spec: Mapping[str, Any]) -> PodHarness:
    """Run the described workflow in virtual time and return the harness (its run and journal)."""
    h = PodHarness(plan(spec["workflow"]), spec.get("outcomes") or {}, start=float(spec.get("start", START)))
    h.run_until_blocked(limit=int(spec.get("steps", 100_000)))
    for action in spec.get("then") or ():
        if action.get("decide") == "once":
            h.decide()
            continue
        h.post(EventType(action["type"]), action.get("node"), **(action.get("data") or {}))
        h.run_until_blocked(limit=int(action.get("steps", 100_000)))
    return h


def run_of(spec: Mapping[str, Any]) -> Run:
    return drive(spec).run
