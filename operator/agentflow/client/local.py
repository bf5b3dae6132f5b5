"""AsyncLocalClient: runs of templates on this machine, with the local runner (agentflow.runner), no cluster.

The manifests given (files or folders: templates, Agents, PromptVersions, ToolPolicies, Budgets) are loaded and
validated on each ``start``, as ``agentflow run`` loads them; their own Workflows are left out. ``start`` makes a
Workflow that names the template with the inputs (session.template_bundle: the one resolution, so an unknown
template or a refused input is named as ``agentflow validate`` names it), creates the run in the state directory
(``.agentflow/runs/RUN_ID``: the same journal the CLI, ``agentflow events`` and the console read) and drives it in
a task of this event loop with the executor ``agentflow run`` uses. Closing the client stops the runs it drives
(their journals stay; ``agentflow resume RUN_ID`` goes on).

Progress is read back from the run's journal, through the engine, every ``poll_seconds``: a run another process
drives (``agentflow run``, the console) is followed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engine.plan import Plan
from ..engine.run import Run
from ..engine.values import Executor
from ..models import ManifestError, TemplateKind, TemplateRef
from ..runner import session
from ..runner.store import RunDir, RunStore, StoreError
from .bodies import check_body, template_ref, workflow_body
from .errors import ClientError, RunNotFound, from_findings
from .handle import RunHandle
from .runs import RunResult, result_of_run

__all__ = ["AsyncLocalClient"]


class AsyncLocalClient:
    """Start runs of templates with the local runner and follow them.

    ``manifests``: files or folders holding the templates and what they name; ``state_dir``: where runs are kept
    (default ``.agentflow``, as the CLI's); ``executor``: ``inprocess`` or ``subprocess`` (``agentflow run
    --executor``); ``env``: the environment the executor is built from (default: this process's; for example
    ``AGENTFLOW_MODEL_MODE=offline`` for the offline model); ``poll_seconds``: how often a run's journal is read
    while waiting or streaming.
    """

    def __init__(self, manifests: Sequence[str | Path], *, state_dir: str | Path = ".agentflow",
                 executor: str = "inprocess", env: Mapping[str, str] | None = None,
                 poll_seconds: float = 0.05) -> None:
        if isinstance(manifests, str | Path):
            raise TypeError("manifests: expected a list of files or folders, got one path; wrap it in a list")
        if not manifests:
            raise ValueError("manifests: at least one file or folder is required")
        if executor not in ("inprocess", "subprocess"):
            raise ValueError(f"executor: expected inprocess or subprocess, got {executor!r}")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds: expected a positive number of seconds, got {poll_seconds!r}")
        self.manifests = [Path(m) for m in manifests]
        self.state_dir = Path(state_dir)
        self.store = RunStore(self.state_dir)
        self.executor = executor
        self.env = None if env is None else dict(env)
        self.poll_seconds = poll_seconds
        self._tasks: dict[str, asyncio.Task[Run]] = {}
        self._runs: dict[str, tuple[RunDir, Plan]] = {}
        """Per run: a RunDir of its own to read the journal with (never the driver's, whose tail it would move),
        and the plan its records are applied to."""

    async def __aenter__(self) -> AsyncLocalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop driving the runs this client started (their journals stay; ``agentflow resume`` goes on)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task  # kept: a handle's next look says its run is no longer driven

    async def start(self, template: str, inputs: Mapping[str, Any] | None = None, *, name: str | None = None,
                    kind: TemplateKind = "WorkflowTemplate") -> RunHandle:
        """Start a run of ``template`` (of ``kind``, from the manifests) with ``inputs``; its handle (``name``:
        the run id). ``name`` is the Workflow's (default: the template's); the run id adds the time and 4 hex
        digits. TemplateNotFound, InputError (the field named), ClientError (the manifests do not validate)."""
        inputs = dict(inputs or {})
        ref = template_ref(template, kind)
        workflow = name or template
        check_body(workflow_body(ref, inputs, workflow))
        try:  # file reads, validation and the run directory's fsyncs: off the event loop
            run_dir, bundle, executor = await asyncio.to_thread(self._create, ref, inputs, workflow)
        except ManifestError as exc:
            mine = [p for p in exc.problems if p.source == f"Workflow/{workflow}"]
            if mine:
                raise from_findings([(p.path.split("."), p.message) for p in mine], template=template,
                                    kind=kind) from None
            raise ClientError(f"the manifests do not validate:\n{exc}") from None
        except (session.SessionError, StoreError) as exc:
            raise ClientError(str(exc)) from None
        run_id = run_dir.run_id
        self._runs[run_id] = (self.store.open(run_id), session.plan_of(bundle))
        self._tasks[run_id] = asyncio.create_task(session.drive(run_dir, bundle, executor), name=f"drive {run_id}")
        return RunHandle(run_id, self)

    def _create(self, ref: TemplateRef, inputs: Mapping[str, Any], workflow: str
                ) -> tuple[RunDir, session.Bundle, Executor]:
        """The run's bundle (the template resolved with the inputs), its executor and its directory, as
        ``agentflow run`` makes them (the sandbox's warnings kept in its meta.json)."""
        bundle = session.template_bundle(self.manifests, ref, inputs, workflow)
        run_id = session.new_run_id(workflow)
        bundle = session.bind_prompts(bundle, run_id)
        env = os.environ if self.env is None else self.env
        sandbox = session.container_sandbox(bundle, env)
        executor = session.make_executor(bundle, self.executor, env, state_dir=self.state_dir, sandbox=sandbox)
        warnings = session.run_warnings(bundle, sandbox)
        return session.create_run(self.store, bundle, self.manifests, warnings, run_id=run_id), bundle, executor

    async def get(self, name: str) -> RunHandle:
        """The handle of a run in the state directory: its id, a unique prefix of it, or ``latest``."""
        run_dir = self._open(name)
        await self.look(run_dir.run_id)
        return RunHandle(run_dir.run_id, self)

    def _open(self, run: str) -> RunDir:
        """A new RunDir of the run (by id, unique prefix or ``latest``); RunNotFound."""
        try:
            return self.store.resolve(run)
        except StoreError as exc:
            raise RunNotFound(str(exc)) from None

    # -- Source

    async def look(self, run: str) -> RunResult:
        if run not in self._runs:
            run_dir = self._open(run)
            try:
                bundle = await asyncio.to_thread(session.bundle_of, run_dir)
            except ManifestError as exc:
                raise ClientError(f"run {run}: its manifests do not load: {exc}") from None
            self._runs[run] = (run_dir, session.plan_of(bundle))
        run_dir, plan = self._runs[run]
        task = self._tasks.get(run)
        stopped = task is not None and task.done()  # before the read: a run that ends during it is read finished
        try:
            records = await asyncio.to_thread(run_dir.read_records)
            state = Run.resume(plan, run_dir.run_id, [r.event for r in records])
        except StoreError as exc:
            raise ClientError(str(exc)) from None
        result = result_of_run(state)
        if task is not None and stopped and not result.finished:
            problem = None if task.cancelled() else task.exception()
            why = "it was stopped" if problem is None else f"{type(problem).__name__}: {problem}"
            raise ClientError(f"run {run} is no longer driven ({why}); its journal is kept: agentflow resume {run}")
        return result

    async def cancel(self, run: str, reason: str) -> None:
        try:
            session.post_cancel(self._open(run), "agentflow.client", reason)
        except session.SessionError as exc:
            raise ClientError(str(exc)) from None
