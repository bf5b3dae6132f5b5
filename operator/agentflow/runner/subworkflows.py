"""Workflow steps on a laptop: each attempt runs its template as a child local run, in this process.

The operator makes a child Workflow per attempt of a workflow step (agentflow.k8s.subworkflow); the local runner
makes a child run per attempt, with the same engine, in the same state directory, from the same manifests::

    parent LocalRun --StepRequest(kind workflow)--> SubWorkflowExecutor.execute
        child_bundle(parent bundle, step.workflowTemplateRef, request.inputs)     the child's inputs checked here
        RunStore: run PARENT_RUN.NODE-aATTEMPT-HASH (created, or resumed when it exists: a resumed parent
                  resumes its child, never starts a second one)
        LocalRun(child plan, an executor of the child's own bundle, depth + 1).drive()
        Succeeded -> StepResult(output = the child's outputs, calls = one "workflow" CallRecord: cost, tokens)
        Failed    -> SubWorkflowFailed (retryable: the step's retry policy runs a new child per attempt)
        Cancelled -> SubWorkflowCancelled (not retried)
    parent cancels the step (its cancel or timeout journaled, then its task cancelled) -> CancelRequested posted
        to the child's inbox, the child driven to its end (its attempts stopped), then the cancellation goes on;
        the parent's driver stopping (Ctrl-C) leaves the child as it is: `agentflow resume` of the parent resumes it

The child's model calls go through a gateway built for the child's bundle over the same Provider and Budgets of
the same manifests. Depth: a child run carries its depth (agentflow.dev/depth); a workflow step of a run at
``max_depth`` fails with WorkflowDepthExceeded instead of starting one (agentflow run --max-workflow-depth).
Without a state directory the children's journals go to a temporary folder, removed when the executor closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.run import Run
from ..engine.values import CallRecord, Event, EventType, Executor, StepError, StepRequest, StepResult
from ..models import ManifestError, StepKind
from ..models.limits import DEFAULT_WORKFLOW_DEPTH
from ..telemetry import Tracing
from . import session
from .loop import DEFAULT_MAX_PARALLEL
from .store import RunDir, RunStore, StoreError

PARENT_RUN_ANNOTATION = "agentflow.dev/parent-run"
PARENT_NODE_ANNOTATION = "agentflow.dev/parent-node"
DEPTH_ANNOTATION = "agentflow.dev/depth"

ExecutorFactory = Callable[[session.Bundle, int], Executor]
"""The executor of a child's bundle at a depth (session.make_executor's, with the parent's settings)."""

_NOT_ID = re.compile(r"[^A-Za-z0-9._-]+")


def child_run_id(run_id: str, node: str, attempt: int) -> str:
    """The one run id of an attempt's child: readable, a valid run id, distinct per (run, node, attempt)."""
    digest = hashlib.sha256(f"{run_id}\0{node}\0{attempt}".encode()).hexdigest()[:8]
    return f"{run_id[:120]}.{_NOT_ID.sub('-', node)[:50].strip('-') or 'step'}-a{attempt}-{digest}"


class SubWorkflowExecutor:
    """The local runner's executor of a Workflow with workflow steps: those run as child runs, every other
    attempt by ``inner``."""

    def __init__(self, inner: Executor, bundle: session.Bundle, child_executor: ExecutorFactory, *,
                 state_dir: str | Path | None = None, depth: int = 0, max_depth: int = DEFAULT_WORKFLOW_DEPTH,
                 max_parallel: int | None = DEFAULT_MAX_PARALLEL, tracing: Tracing | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.bundle = bundle
        self.child_executor = child_executor
        self.depth = depth
        self.max_depth = max_depth
        self.max_parallel = max_parallel
        self.tracing = tracing
        self.clock = clock
        self._temporary: str | None = None
        if state_dir is None:
            self._temporary = state_dir = tempfile.mkdtemp(prefix="agentflow-children-")
        self.store = RunStore(Path(state_dir))

    async def execute(self, request: StepRequest) -> StepResult:
        if request.kind != StepKind.workflow.value:
            return await self.inner.execute(request)
        step = self.bundle.workflow.spec.find_step(request.step)
        if step is None or step.workflow_template_ref is None:
            return _failed("UnsupportedStepKind", f"step {request.step!r} is not a workflow step of Workflow "
                           f"{self.bundle.workflow.metadata.name!r}", retryable=False)
        if self.depth >= self.max_depth:
            return _failed("WorkflowDepthExceeded", f"step {request.step!r}: this run is at depth {self.depth}, the "
                           f"most workflow steps may nest (--max-workflow-depth {self.max_depth}); a template that "
                           "runs itself through workflow steps never ends", retryable=False)
        run_id = child_run_id(request.run_id, request.node, request.attempt)
        try:
            run_dir = self._open(run_id, request, step.workflow_template_ref)
        except ManifestError as exc:
            problems = "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in exc.problems)
            return _failed("InvalidInputs", f"step {request.step!r}: the child Workflow cannot be made: {problems}",
                           retryable=False)
        try:
            child = await self._drive(run_dir)
        except asyncio.CancelledError:
            if self._stopped(request):  # the parent cancelled the step; else the process stops: resumed later
                await self._cancel(run_dir, request)
            raise
        return _result(run_id, child)

    def _stopped(self, request: StepRequest) -> bool:
        """Whether the parent's journal ended this attempt (StepCancelled, StepTimedOut: the engine's cancel, which
        is journaled before the attempt's task is cancelled), rather than its driver stopping (Ctrl-C, an error:
        the parent resumes later and its child with it). A parent outside this store (the children's temporary
        folder) cannot be resumed with its children: they are cancelled."""
        try:
            records = self.store.open(request.run_id).read_records()
        except StoreError:
            return True
        ended = False
        for record in records:
            event = record.event
            if event.node != request.node:
                continue
            if event.type is EventType.step_scheduled:
                ended = False
            elif event.type in (EventType.step_cancelled, EventType.step_timed_out):
                ended = True
        return ended

    def _open(self, run_id: str, request: StepRequest, ref: Any) -> RunDir:
        """The child's run directory: the one this attempt made before (a resumed parent), else a new one."""
        if (self.store.runs_path / run_id).is_dir():
            return self.store.open(run_id)
        annotations = {PARENT_RUN_ANNOTATION: request.run_id, PARENT_NODE_ANNOTATION: request.node,
                       DEPTH_ANNOTATION: str(self.depth + 1)}
        bundle = session.child_bundle(self.bundle, ref, request.inputs, _workflow_name(run_id), annotations)
        bundle = session.bind_prompts(bundle, run_id)
        return session.create_run(self.store, bundle, [f"{request.run_id}/{request.node}"], run_id=run_id)

    async def _drive(self, run_dir: RunDir) -> Run:
        bundle = session.bundle_of(run_dir)
        return await session.drive(run_dir, bundle, self.child_executor(bundle, self.depth + 1),
                                   max_parallel=self.max_parallel, tracing=self.tracing)

    async def _cancel(self, run_dir: RunDir, request: StepRequest) -> None:
        """Cancel the child of a cancelled attempt: its inbox gets the cancel, and it is driven to its end (the
        attempts it had running are stopped before they run again)."""
        with contextlib.suppress(Exception):  # the parent's cancellation goes on whatever happens here
            run_dir.post(Event(EventType.cancel_requested, None, {
                "by": f"run {request.run_id}", "reason": f"its step {request.node} was cancelled"}, self.clock()))
            await self._drive(run_dir)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)


def _workflow_name(run_id: str) -> str:
    """The child Workflow's metadata.name: a DNS label of the child's run id."""
    name = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    return (name[:54].rstrip("-") + "-" + run_id[-8:]) if len(name) > 63 else name


def _failed(kind: str, message: str, *, retryable: bool, calls: tuple[CallRecord, ...] = ()) -> StepResult:
    return StepResult(error=StepError(kind, message, retryable), calls=calls)


def _result(run_id: str, child: Run) -> StepResult:
    """The step's result from its child's end: its outputs, or why not; its cost as one call either way."""
    call = CallRecord("workflow", run_id, hashlib.sha256(run_id.encode()).hexdigest(),
                      {"run": run_id, "phase": child.phase}, cost_usd=child.cost_usd, tokens=child.tokens)
    if child.phase == "Succeeded":
        return StepResult(output=dict(child.outputs or {}), calls=(call,))
    if child.phase == "Cancelled":
        return _failed("SubWorkflowCancelled", f"child run {run_id} was cancelled: {child.reason or ''}".rstrip(": "),
                       retryable=False, calls=(call,))
    return _failed("SubWorkflowFailed", f"child run {run_id} {child.phase.lower()}: {child.reason or 'no reason'}",
                   retryable=True, calls=(call,))
