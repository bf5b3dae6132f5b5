"""The local driver: the engine, a journal on disk and an executor, with a real clock.

Write-ahead: every decision's events are fsync'ed to the journal before any
attempt starts, and every result is journaled when it arrives, so a run killed
at any point (kill -9 included) resumes from its journal: finished steps are
never run again, and attempts that were in flight restart with the same
idempotency key.

At most ``plan.parallelism`` attempts run at once: the lower of the Workflow's spec.parallelism and the
runner's cap (``agentflow run --max-parallel``, AGENTFLOW_MAX_PARALLEL, default DEFAULT_MAX_PARALLEL),
fixed when the run starts (RunStarted records it). An output the journal cannot hold (NaN, infinity, an
integer past 64 bits, from a tool or a model) fails its attempt with InvalidOutput instead of the run.

Traces (``tracing`` on): every journaled event goes through the run's RunTrace (agentflow.telemetry.spans)
and the spans it ends are exported; each attempt runs under its span's context (attempt_ids), so its model
calls (the gateway) and HTTP tool calls are its children. A resumed run replays its journal into the RunTrace
without exporting, and continues the same trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..engine.canonical import check_json, is_plain
from ..engine.journal import Journal
from ..engine.plan import Plan
from ..engine.run import Run
from ..engine.values import CallRecord, Event, EventType, Executor, StepError, StepRequest, StepResult
from ..telemetry import RunTrace, Tracing, attached, attempt_ids, steps_of
from .store import RunDir

Clock = Callable[[], float]
Observer = Callable[[Run, Sequence[Event]], None]

# How often the inbox (approvals, cancels from other processes) is read while waiting.
INBOX_POLL_SECONDS = 0.25
DEFAULT_MAX_PARALLEL = 32
"""Attempts a local run runs at once unless --max-parallel / AGENTFLOW_MAX_PARALLEL or a lower
spec.parallelism says otherwise: enough for model calls that mostly wait, few enough that a workflow of
thousands of ready steps neither floods the machine nor the provider."""


class RunStuck(RuntimeError):
    """The run can no longer move and the engine did not end it (a bug: the engine fails stuck runs itself)."""


def _unjournalable(output: Any, path: str = "output") -> str | None:
    """Why the journal cannot hold ``output``, or None (what Journal.append checks: JSON types, and text that
    encodes, which is_plain does not look at: a model may answer with a lone surrogate)."""
    if is_plain(output, 0):
        try:
            orjson.dumps(output)
            return None
        except orjson.JSONEncodeError:
            pass
    try:
        check_json(output, path)
    except (TypeError, ValueError) as exc:
        return str(exc)[:2000]
    return None


def _recordable(call: CallRecord) -> CallRecord:
    """``call`` as the journal can hold it: a response it cannot hold replaced by why (its tokens and cost kept,
    so what the provider charged is still counted)."""
    why = _unjournalable(call.response, "response")
    return call if why is None else dataclasses.replace(call, response=f"<not recorded: {why}>")


class ApprovalRefused(ValueError):
    """An approval from someone who is not among the step's approvers, or for a step not waiting."""


def check_inbox_event(run: Run, event: Event) -> str | None:
    """Why an event posted from outside cannot be applied, or None when it can."""
    if event.type is EventType.approval_decided:
        node = run.nodes.get(str(event.node))
        if node is None or node.phase != "Waiting":
            waiting = sorted(n.id for n in run.nodes.values() if n.phase == "Waiting")
            return f"step {event.node!r} is not waiting for approval (waiting: {', '.join(waiting) or 'none'})"
        approval = node.plan.spec.approval
        approvers = approval.approvers if approval is not None else []
        if approvers and event.data.get("by") not in approvers:
            return f"{event.data.get('by')!r} may not decide {event.node!r}; approvers: {', '.join(approvers)}"
    if event.type is EventType.cancel_requested and run.stop_reason is not None:
        return "the run is already being cancelled"
    return None


class LocalRun:
    """Drives one run to its end (or until interrupted) and returns its final state."""

    def __init__(self, run_dir: RunDir, plan: Plan, executor: Executor, *, seed: int = 0,
                 clock: Clock = time.time, observer: Observer | None = None,
                 wait_for_approvals: bool = True, tracing: Tracing | None = None) -> None:
        self.run_dir = run_dir
        self.plan = plan
        self.executor = executor
        self.seed = seed
        self.clock = clock
        self.observer = observer
        self.wait_for_approvals = wait_for_approvals
        self.journal = Journal()
        self.run: Run | None = None
        self.rejected: list[str] = []
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.trace = RunTrace(run_dir.run_id, plan.name, namespace=plan.namespace or "", steps=steps_of(plan)) \
            if self.tracing is not None else None

    def _record(self, run: Run, events: Sequence[Event], *, apply: bool) -> None:
        if not events:
            return
        if apply:
            for event in events:
                run.apply(event)
        records = self.journal.extend(events)
        self.run_dir.append(records)
        if self.tracing is not None and self.trace is not None:
            self.tracing.emit(self.trace.observe(events))
        if self.observer is not None:
            self.observer(run, events)

    def _load(self) -> Run:
        records = self.run_dir.read_records()
        self.journal = Journal(records)
        if self.trace is not None:
            self.trace.observe([r.event for r in records], emit=False)
        if records:
            return Run.resume(self.plan, self.run_dir.run_id, [r.event for r in records])
        return Run(self.plan, self.run_dir.run_id, self.seed)

    def _ingest_inbox(self, run: Run) -> None:
        items = self.run_dir.inbox()
        if not items:
            return
        accepted = []
        for _, event in items:
            problem = check_inbox_event(run, event)
            if problem is None:
                accepted.append(Event(event.type, event.node, event.data, self.clock()))
            else:
                self.rejected.append(problem)
        self._record(run, accepted, apply=True)
        self.run_dir.ack([path for path, _ in items])

    async def _execute(self, request: StepRequest) -> StepResult:
        ids = attempt_ids(request.run_id, request.node, request.attempt) if self.tracing is not None else None
        try:
            with attached(ids):
                return await self.executor.execute(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an executor bug must not take the run down
            return StepResult(error=StepError("ExecutorError", f"{type(exc).__name__}: {exc}"))

    def _result_events(self, request: StepRequest, result: StepResult) -> list[Event]:
        now = self.clock()
        calls = tuple(_recordable(c) for c in result.calls)
        bad = _unjournalable(result.output) or next(
            (why for c in calls if (why := _unjournalable(c.to_dict(), "call")) is not None), None)
        if bad is not None:
            result = StepResult(error=StepError("InvalidOutput", f"the attempt's result cannot be recorded: {bad}",
                                                retryable=False), calls=calls)
            bad_calls = any(_unjournalable(c.to_dict(), "call") is not None for c in calls)
            if bad_calls:  # a call's other fields (its name): dropped, as before
                result = StepResult(error=result.error)
        elif calls != result.calls:
            result = dataclasses.replace(result, calls=calls)
        events = [Event(EventType.cost_recorded, request.node, {"attempt": request.attempt, "call": c.to_dict()}, now)
                  for c in result.calls]
        if result.ok:
            events.append(Event(EventType.step_succeeded, request.node, {
                "attempt": request.attempt, "output": result.output,
                "costUsd": result.cost_usd, "tokens": result.tokens}, now))
        else:
            assert result.error is not None
            data: dict[str, Any] = {"attempt": request.attempt, "error": result.error.to_dict()}
            if result.output is not None:
                data["output"] = result.output
            events.append(Event(EventType.step_failed, request.node, data, now))
        return events

    async def drive(self) -> Run:
        with self.run_dir.lock():
            run = self._load()
            self.run = run
            tasks: dict[asyncio.Task[StepResult], StepRequest] = {}
            by_node: dict[str, asyncio.Task[StepResult]] = {}
            stopping: set[asyncio.Task[StepResult]] = set()

            def start(requests: Sequence[StepRequest]) -> list[Event]:
                """Tasks for ``requests`` (they run at the next await, after the caller journaled their
                StepStarted) and those StepStarted events, applied."""
                for request in requests:
                    task = asyncio.create_task(self._execute(request), name=request.idempotency_key)
                    tasks[task] = request
                    by_node[request.node] = task
                executor = type(self.executor).__name__
                now = self.clock()
                events = [Event(EventType.step_started, r.node, {"attempt": r.attempt, "executor": executor}, now)
                          for r in requests]
                for event in events:
                    run.apply(event)
                return events

            self._record(run, start(run.in_flight()), apply=False)
            try:
                while True:
                    self._ingest_inbox(run)
                    decision = run.decide(self.clock())
                    # The decision and the StepStarted of its attempts in one write and one fsync, before any of
                    # them runs (write-ahead): a task starts running only at the next await.
                    self._record(run, [*decision.events, *start(decision.start)], apply=False)
                    for node in decision.cancel:
                        task = by_node.pop(node, None)
                        if task is not None:
                            task.cancel()
                            tasks.pop(task, None)
                            stopping.add(task)  # awaited before the run returns: it may clean up (a child run)
                            task.add_done_callback(stopping.discard)
                    if decision.finished:
                        return run
                    if not tasks:  # (the scan of every node only when nothing runs)
                        waiting = any(n.phase == "Waiting" for n in run.nodes.values())
                        idle = decision.wake_at is None and not decision.events
                        if idle and not waiting and not run.suspended:
                            raise RunStuck(f"run {run.run_id} is stuck: nothing runs and nothing is due, and the "
                                           "engine did not end it; please report this with the run's journal")
                        if waiting and not self.wait_for_approvals:
                            return run
                    timeout = INBOX_POLL_SECONDS
                    if decision.wake_at is not None:
                        timeout = max(0.0, min(timeout, decision.wake_at - self.clock()))
                    if not tasks:
                        await asyncio.sleep(timeout)
                        continue
                    done, _ = await asyncio.wait(list(tasks), timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    results: list[Event] = []
                    for task in done:
                        request = tasks.pop(task)
                        if by_node.get(request.node) is task:
                            del by_node[request.node]
                        if task.cancelled():
                            continue
                        results.extend(self._result_events(request, task.result()))
                    self._record(run, results, apply=True)  # every result that arrived together: one fsync
            finally:
                for task in tasks:
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(*tasks, *stopping, return_exceptions=True)
