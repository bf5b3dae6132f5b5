"""Run attempts in this process: the executor of the local runner and of step pods.

An executor never raises for a failing step: every failure is a StepResult with a StepError (a cancelled
attempt still raises CancelledError). The calls an attempt made are returned even when it fails, so their
cost is booked. The last results are remembered by idempotency key, so an attempt asked for twice (after a
crash) answers with its first result.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from agentflow.engine.values import CallRecord, StepError, StepRequest, StepResult
from agentflow.models import StepKind

from .agent_loop import run_tool_call, run_turn
from .attempt import StepFailure, StepServices, fail
from .llm_step import run_llm_step
from .plan_step import run_plan_step
from .summary import run_summary
from .tool_step import run_tool_step


class InProcessExecutor:
    """The engine's Executor, in this process. ``services``: see :class:`StepServices`."""

    def __init__(self, services: StepServices, *, remember: int = 1024) -> None:
        self.services = services
        self._remember = remember
        self._done: collections.OrderedDict[str, StepResult] = collections.OrderedDict()

    async def execute(self, request: StepRequest) -> StepResult:
        key = request.idempotency_key
        if key in self._done:
            return self._done[key]
        calls: list[CallRecord] = []
        try:
            output = await self._with_deadline(request, calls)
            result = StepResult(output=output, calls=tuple(calls))
        except StepFailure as failed:
            result = StepResult(error=failed.error, calls=tuple(calls))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must still end the attempt with a StepResult
            error = StepError("ExecutorError", f"step {request.step!r}: {type(exc).__name__}: {exc}", True)
            result = StepResult(error=error, calls=tuple(calls))
        self._done[key] = result
        while len(self._done) > self._remember:
            self._done.popitem(last=False)
        return result

    async def _with_deadline(self, request: StepRequest, calls: list[CallRecord]) -> Any:
        if request.deadline is None:
            return await self._run(request, calls, None)
        left = request.deadline - self.services.clock()
        if left <= 0:
            raise fail("DeadlineExceeded", f"step {request.step!r}: the deadline passed before it started", True)
        try:
            return await asyncio.wait_for(self._run(request, calls, left), left)
        except TimeoutError:
            raise fail(
                "DeadlineExceeded",
                f"step {request.step!r} ({request.node}) did not finish within its deadline ({left:.3g}s left "
                "at start); raise timeoutSeconds if it needs longer",
                True,
            ) from None

    async def _run(self, request: StepRequest, calls: list[CallRecord], timeout: float | None) -> Any:
        step = self.services.step_for(request)
        if request.kind == StepKind.plan.value and step.kind is StepKind.plan:
            return await run_plan_step(self.services, request, step, calls, timeout)
        if request.context is not None and step.kind is StepKind.llm:  # a part of an agent loop
            if "turn" in request.context and request.kind == StepKind.llm.value:
                return await run_turn(self.services, request, step, calls, timeout)
            if "call" in request.context and request.kind == StepKind.tool.value:
                return await run_tool_call(self.services, request, step, calls)
            if "summary" in request.context and request.kind == StepKind.llm.value:
                return await run_summary(self.services, request, step, calls, timeout)
        if request.kind == StepKind.llm.value and step.kind is StepKind.llm:
            return await run_llm_step(self.services, request, step, calls, timeout)
        if request.kind == StepKind.tool.value and step.kind is StepKind.tool:
            return await run_tool_step(self.services, request, step, calls)
        raise fail(
            "UnsupportedStepKind",
            f"step {request.step!r} is a {step.kind.value} step but the request is for kind {request.kind!r}; "
            "executors run llm, tool and plan steps only",
        )
