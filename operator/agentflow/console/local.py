"""The runs of `agentflow run` in a state directory, for the console (`agentflow ui`).

Reads go through :mod:`agentflow.runner.store` (the journal on disk) and :mod:`agentflow.runner.session`
(the run's manifests and plan); actions go through the very functions the CLI calls, so they are recorded
the same way:

    approve / reject   session.post_decision   (the inbox; the process driving the run journals it)
    cancel             session.post_cancel
    resume             session.drive           (here, in the console's process: `agentflow resume`)
    retry              a what-if run from the first failed step (`agentflow replay RUN --from-step STEP`)
    replay             replay_exact            (`agentflow replay RUN`)
    diff               history.diff            (`agentflow diff A B`)
    start              session.load_bundle + create_run + drive (`agentflow run FILE`, FILE written under
                       STATE_DIR/designer/)

Live updates tail ``journal.jsonl`` from the byte offset already read (a torn last line waits for its
newline), apply the new records to the run's engine state and send the graph nodes whose view changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from ..audit.chain import verify as verify_audit
from ..audit.files import AuditFileError, read_rows, sniff_format
from ..client.runs import result_of_run
from ..engine.history import diff, history
from ..engine.journal import JournalError, Record
from ..engine.plan import Plan, PlanError, compile_plan
from ..engine.run import Run
from ..engine.values import Event
from ..models import Catalog, ManifestError, Workflow
from ..models.manifests import parse_resource
from ..runner import session
from ..runner.replay import ReplayError, WhatIfExecutor, replay_exact
from ..runner.store import RunDir, RunStore, StoreError
from ..runner.subworkflows import child_run_id
from ..validation.grants import agent_loops, approval_gates
from .details import NodeNotFound, node_detail
from .errors import BadRequest, Conflict, NotFound
from .graph import Layout, changed, graph, layout, node_views, run_summary
from .source import Caller, RunFilter, RunSnapshot

__all__ = ["LocalRunSource"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02
"""How often a watched journal is checked for new records (a stat; the file is read only when it grew)."""
_WORKFLOW_FILE = re.compile(r"[^a-z0-9-]+")


@dataclasses.dataclass
class _Loaded:
    """One run's engine state, kept current by reading only what was appended to its journal."""

    run_dir: RunDir
    plan: Plan
    shape: Layout
    run: Run
    events: list[Event]
    offset: int  # bytes of journal.jsonl read (complete lines only)
    labels: dict[str, str]
    namespace: str
    error: str | None = None

    @property
    def seq(self) -> int:
        return len(self.events) - 1

    def meta(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "labels": self.labels, "created": self.run_dir.meta.get("created"),
                "sources": self.run_dir.meta.get("sources", []), "driving": _driving(self.run_dir)}


def _driving(run_dir: RunDir) -> bool:
    """Whether a live process drives the run: its pid is in the lock file while it holds the lock (a kill -9
    leaves the pid of a process that is gone)."""
    try:
        pid = int((run_dir.path / "lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_new(loaded: _Loaded) -> list[Record]:
    """Records appended since the last read; a torn last line is left for later."""
    path = loaded.run_dir.journal_path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    if size < loaded.offset:  # truncated: a kill -9's torn line was cut by the next writer
        loaded.offset = min(loaded.offset, size)
    if size == loaded.offset:
        return []
    with path.open("rb") as f:
        f.seek(loaded.offset)
        data = f.read(size - loaded.offset)
    end = data.rfind(b"\n")
    if end < 0:
        return []
    records = []
    for line in data[:end].split(b"\n"):
        try:
            records.append(Record.from_dict(orjson.loads(line)))
        except (orjson.JSONDecodeError, JournalError) as exc:
            raise StoreError(f"{path}: a record after byte {loaded.offset} is not readable ({exc}); "
                             f"check it with `agentflow verify {loaded.run_dir.run_id}`") from None
    loaded.offset += end + 1
    return records


_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _plan_of(run_dir: RunDir) -> tuple[Workflow, Plan]:
    """The plan of a run, as session.plan_of compiles it, from the manifests the run stored (validated when
    the run was created; the runner validates them again on resume). Read with libyaml when there is one: a
    5,000-step manifest takes seconds with the line-tracking loader `agentflow validate` needs for its messages."""
    try:
        bodies = [d for d in yaml.load_all(run_dir.manifests_yaml, Loader=_FAST_LOADER) if d]
        resources = [parse_resource(body) for body in bodies]
    except (yaml.YAMLError, ManifestError) as exc:
        raise Conflict(f"run {run_dir.run_id}: its manifests.yaml no longer reads: {exc}") from None
    name = run_dir.meta.get("workflow")
    workflows = [r for r in resources if isinstance(r, Workflow) and (name is None or r.metadata.name == name)]
    if len(workflows) != 1:
        raise Conflict(f"run {run_dir.run_id}: its manifests.yaml holds {len(workflows)} Workflows named {name!r}")
    catalog = Catalog()
    for r in resources:
        if not isinstance(r, Workflow):
            catalog.add(r)
    try:
        return workflows[0], compile_plan(workflows[0], approval_gates(workflows[0].spec, catalog),
                                                 loops=agent_loops(workflows[0].spec, catalog))
    except PlanError as exc:
        raise Conflict(f"run {run_dir.run_id}: {exc}") from None


class LocalRunSource:
    """:class:`~agentflow.console.source.RunSource` over a state directory."""

    mode = "local"

    def __init__(self, state_dir: str | Path, *, executor: str = "inprocess",
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.store = RunStore(self.state_dir)
        self.executor = executor
        self.clock = clock
        self._cache: dict[str, _Loaded] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    # ------------------------------------------------------------------ reading

    def _resolve(self, ref: str) -> RunDir:
        try:
            return self.store.resolve(ref)
        except StoreError as exc:
            raise NotFound(str(exc)) from None

    def _load(self, run_dir: RunDir) -> _Loaded:
        cached = self._cache.get(run_dir.run_id)
        if cached is None:
            workflow, plan = _plan_of(run_dir)
            meta = workflow.metadata
            cached = _Loaded(run_dir, plan, layout(plan), Run(plan, run_dir.run_id), [], 0,
                             dict(meta.labels or {}), meta.namespace or "default")
            self._cache[run_dir.run_id] = cached
        self._refresh(cached)
        return cached

    def _refresh(self, loaded: _Loaded) -> list[Event]:
        new = [r.event for r in _read_new(loaded)]
        for event in new:
            loaded.run.apply(event)
        loaded.events.extend(new)
        return new

    async def list_runs(self, caller: Caller, where: RunFilter) -> list[dict[str, Any]]:
        rows = []
        try:
            infos = self.store.list_runs()
        except StoreError as exc:
            raise Conflict(str(exc)) from None
        for info in reversed(infos):  # newest first
            try:
                loaded = self._load(self.store.open(info.run_id))
            except (Conflict, StoreError, ValueError) as exc:
                rows.append({"runId": info.run_id, "workflow": info.workflow, "phase": "Unreadable",
                             "reason": str(exc), "created": info.created, "namespace": None, "labels": {},
                             "progress": {"done": 0, "total": 0}, "costUsd": 0.0, "tokens": 0})
                continue
            if where.namespace and loaded.namespace != where.namespace:
                continue
            if where.phase and loaded.run.shown_phase != where.phase:
                continue
            if not where.matches_labels(loaded.labels):
                continue
            row = run_summary(loaded.run, loaded.meta())
            row.pop("outputs", None)
            row.pop("path", None)
            rows.append(row)
        return rows

    async def snapshot(self, caller: Caller, ref: str) -> RunSnapshot:
        loaded = self._load(self._resolve(ref))
        return RunSnapshot(graph(loaded.plan, loaded.run, loaded.meta(), loaded.shape), loaded.seq)

    async def node(self, caller: Caller, ref: str, node: str) -> dict[str, Any]:
        loaded = self._load(self._resolve(ref))
        try:
            return node_detail(loaded.plan, loaded.run, loaded.events, node,
                               lambda child, attempt: child_run_id(loaded.run.run_id, child, attempt))
        except NodeNotFound:
            names = ", ".join(list(loaded.plan.units())[:20])
            raise NotFound(f"run {loaded.run.run_id} has no node {node!r} (steps: {names})") from None

    async def start_template(self, caller: Caller, namespace: str, template: str, kind: str,
                             inputs: dict[str, Any], name: str | None, labels: dict[str, str]) -> dict[str, Any]:
        raise Conflict("a local console starts runs of manifests (POST /api/runs with their YAML); templates are "
                       "started by name on a cluster's console, or locally with agentflow.client.LocalClient")

    async def result(self, caller: Caller, ref: str) -> dict[str, Any]:
        return result_of_run(self._load(self._resolve(ref)).run).to_dict()

    async def watch(self, caller: Caller, ref: str, after: int) -> AsyncIterator[dict[str, Any]]:
        run_dir = self._resolve(ref)
        loaded = self._load(run_dir)
        if after > loaded.seq:
            raise BadRequest(f"after={after}: the journal of run {run_dir.run_id} ends at record {loaded.seq}")
        return self._updates(run_dir, loaded, after)

    async def _updates(self, run_dir: RunDir, loaded: _Loaded, after: int) -> AsyncIterator[dict[str, Any]]:
        # What the client has: the views as of record `after` (a page passes its snapshot's seq); an older
        # `after` gets every graph node in its first update.
        sent = node_views(loaded.plan, loaded.run) if after == loaded.seq else {}
        seq = after
        while True:
            self._refresh(loaded)
            if loaded.seq > seq:
                views = node_views(loaded.plan, loaded.run)
                update = {"seq": loaded.seq, "run": run_summary(loaded.run, loaded.meta()),
                          "nodes": changed(sent, views)}
                sent, seq = views, loaded.seq
                yield update
            if loaded.run.finished and not _driving(run_dir):
                return
            await asyncio.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------ actions (as the CLI records them)

    async def decide(self, caller: Caller, ref: str, node: str, approved: bool, reason: str) -> dict[str, Any]:
        run_dir = self._resolve(ref)
        try:
            session.post_decision(run_dir, node, approved, caller.user, reason)
        except session.SessionError as exc:
            raise Conflict(str(exc)) from None
        driving = _driving(run_dir)
        return {"run": run_dir.run_id, "node": node, "decision": "approved" if approved else "rejected",
                "by": caller.user, "driving": driving,
                "note": None if driving else "no process drives this run: resume it to apply the decision"}

    async def cancel(self, caller: Caller, ref: str, reason: str) -> dict[str, Any]:
        run_dir = self._resolve(ref)
        try:
            session.post_cancel(run_dir, caller.user, reason)
        except session.SessionError as exc:
            raise Conflict(str(exc)) from None
        return {"run": run_dir.run_id, "cancel": "requested", "by": caller.user, "driving": _driving(run_dir)}

    def _check_free(self, run_dir: RunDir) -> None:
        task = self._tasks.get(run_dir.run_id)
        if task is not None and not task.done():
            raise Conflict(f"run {run_dir.run_id} is already being driven by this console")
        try:
            with run_dir.lock():
                pass
        except StoreError as exc:
            raise Conflict(str(exc)) from None

    def _spawn(self, run_dir: RunDir, bundle: session.Bundle, executor: Any) -> None:
        async def drive() -> None:
            try:
                await session.drive(run_dir, bundle, executor)
            except Exception:  # the journal keeps what happened; the run page shows it
                log.exception("driving run %s failed", run_dir.run_id)

        self._tasks[run_dir.run_id] = asyncio.create_task(drive(), name=f"drive {run_dir.run_id}")

    def _executor(self, bundle: session.Bundle) -> Any:
        try:
            return session.make_executor(bundle, self.executor, state_dir=self.state_dir)
        except session.SessionError as exc:
            raise BadRequest(str(exc)) from None

    async def resume(self, caller: Caller, ref: str) -> dict[str, Any]:
        run_dir = self._resolve(ref)
        loaded = self._load(run_dir)
        if loaded.run.finished:
            raise Conflict(f"run {run_dir.run_id} has finished ({loaded.run.phase}); nothing to resume")
        self._check_free(run_dir)
        bundle = session.bundle_of(run_dir)
        self._spawn(run_dir, bundle, self._executor(bundle))
        return {"run": run_dir.run_id, "resumed": True}

    async def retry(self, caller: Caller, ref: str) -> dict[str, Any]:
        original = self._resolve(ref)
        loaded = self._load(original)
        if loaded.run.phase != "Failed":
            raise Conflict(f"run {original.run_id} is {loaded.run.phase}: only a Failed run can be retried")
        failed = [n.key for n in loaded.run.nodes.values() if n.phase == "Failed"]
        if not failed:
            raise Conflict(f"run {original.run_id} failed before any step failed ({loaded.run.reason}); "
                           "start it again instead")
        from_step = failed[0]
        bundle = session.bundle_of(original)
        executor = WhatIfExecutor(list(loaded.events), self._executor(bundle), loaded.plan, from_step)
        run_dir = session.create_run(self.store, bundle, [str(original.path)])
        self._spawn(run_dir, bundle, executor)
        return {"run": run_dir.run_id, "retryOf": original.run_id, "fromStep": from_step}

    async def replay(self, caller: Caller, ref: str) -> dict[str, Any]:
        run_dir = self._resolve(ref)
        loaded = self._load(run_dir)
        try:
            run, _, result = replay_exact(loaded.plan, run_dir.run_id, list(loaded.events))
        except ReplayError as exc:
            raise Conflict(f"run {run_dir.run_id}: {exc}") from None
        return {"run": run_dir.run_id, "mode": "exact", "phase": run.phase, **result.to_dict()}

    async def diff(self, caller: Caller, a: str, b: str) -> dict[str, Any]:
        left, right = self._load(self._resolve(a)), self._load(self._resolve(b))
        result = diff(history(left.events), history(right.events))
        return {"a": left.run.run_id, "b": right.run.run_id, **result.to_dict()}

    async def start(self, caller: Caller, manifests_yaml: str, workflow: str | None) -> dict[str, Any]:
        folder = self.state_dir / "designer"
        folder.mkdir(parents=True, exist_ok=True)
        stem = _WORKFLOW_FILE.sub("-", (workflow or "workflow").lower())[:40] or "workflow"
        path = folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.yaml"
        with path.open("x", encoding="utf-8") as out:  # its own file: two starts in one second share none
            out.write(manifests_yaml)
        try:
            bundle = session.load_bundle([path], workflow)
            run_id = session.new_run_id(bundle.workflow.metadata.name)
            bundle = session.bind_prompts(bundle, run_id)
        except (ManifestError, session.SessionError) as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            if isinstance(exc, ManifestError):
                raise BadRequest("the manifests do not validate:\n" + str(exc)) from None
            raise BadRequest(str(exc)) from None
        executor = self._executor(bundle)
        run_dir = session.create_run(self.store, bundle, [path], run_id=run_id)
        self._spawn(run_dir, bundle, executor)
        return {"run": run_dir.run_id, "file": str(path)}

    async def audit(self, caller: Caller) -> dict[str, Any]:
        path = self.state_dir / session.AUDIT_FILE
        if not path.exists():
            return {"source": str(path), "rows": [], "report": None,
                    "note": "no audit chain yet: local runs append to it once a step calls a model or a tool"}
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Conflict(f"cannot read {path}: {exc}") from None
        lines = text.splitlines(keepends=True)
        try:
            rows = list(read_rows(iter(lines), sniff_format(lines[0] if lines else "")))
        except AuditFileError as exc:
            return {"source": str(path), "rows": [], "report": {"ok": False, "problem": {"message": str(exc)}}}
        report = verify_audit(rows)
        return {"source": str(path), "rows": rows[-200:], "total": len(rows), "report": report.to_dict()}

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
