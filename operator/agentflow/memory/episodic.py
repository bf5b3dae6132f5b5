"""Episodic memory: an Agent's previous runs, read-only, as plain JSON (what the ``past_runs`` tool answers).

    EpisodeSource.past_runs(scope, limit=5, workflow=None, exclude_run=None) -> list[Episode], newest first

An :class:`Episode` is one run in which the Agent ran at least one step: the run, its Workflow, its phase and
times, and the Agent's steps in it (phase, output or error, each cut to :data:`PREVIEW_CHARS`); :func:`episode`
makes it from a run's journal. Sources: ``agentflow.runner.episodes.LocalEpisodes`` (the local runner's
journals) and :class:`StoredEpisodes` (the operator's journal in PostgreSQL, through the :class:`RunArchive`
seam, which the gateway serves on a cluster). :class:`NoEpisodes` answers that past runs are not available
(a gateway without a journal).

Only runs of the scope's namespace are read, and only those in which the scope's Agent ran a step: a step
cannot read another namespace's runs, whatever arguments its model writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol, TypedDict

from ..engine.history import history
from ..engine.journal import Record
from ..engine.values import Event
from ..models import ManifestError, Workflow
from ..models.manifests import parse_documents, parse_yaml
from ..storage.attempts import StoredRun
from ..storage.errors import StorageError, StorageUnavailable
from .records import MemoryUnavailable, Scope

__all__ = ["PREVIEW_CHARS", "Episode", "EpisodeSource", "EpisodeStep", "NoEpisodes", "RunArchive", "StoredEpisodes",
           "StoredRun", "episode", "preview"]

log = logging.getLogger(__name__)

PREVIEW_CHARS = 600


class EpisodeStep(TypedDict):
    node: str
    step: str
    phase: str
    output: Any
    error: str | None


class Episode(TypedDict):
    run: str
    workflow: str
    namespace: str
    phase: str | None
    startedAt: float | None
    finishedAt: float | None
    steps: list[EpisodeStep]


class EpisodeSource(Protocol):
    async def past_runs(self, scope: Scope, *, limit: int = 5, workflow: str | None = None,
                        exclude_run: str | None = None) -> list[Episode]: ...


def preview(value: Any, limit: int = PREVIEW_CHARS) -> Any:
    """``value`` when its JSON is at most ``limit`` characters, else the start of its JSON text and a marker."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) <= limit:
        return value
    return text[:limit] + f"... ({len(text) - limit} more characters)"


def _agent_steps(workflow: Workflow, agent: str) -> set[str]:
    return {key for key, step in workflow.spec.keyed_steps()
            if step.agent_ref is not None and step.agent_ref.name == agent}


def _step_of(node: str) -> str:
    """The step (or state) of a node id: ``name``, ``name[i]`` (fan-out) or ``state#visit``; an agent loop's
    turns and calls (``step/t1/call-1``) are no step's, their answer is their step's output."""
    return node.split("[", 1)[0].split("#", 1)[0]


def episode(run_id: str, workflow: Workflow, events: Sequence[Event], agent: str) -> Episode | None:
    """The Episode of one run for ``agent``, None when the Agent ran no step in it. Only the Agent's steps are
    shown (an agent loop's turns and calls are inside its step's output)."""
    steps = _agent_steps(workflow, agent)
    if not steps:
        return None
    run = history(list(events))
    mine: list[EpisodeStep] = []
    for node in run.path:
        if _step_of(node) not in steps:
            continue
        h = run.nodes[node]
        error = f"{h.error.get('type')}: {h.error.get('message')}" if h.error else None
        mine.append({"node": node, "step": _step_of(node), "phase": h.phase, "output": preview(h.output),
                     "error": preview(error) if error else None})
    return {"run": run_id, "workflow": workflow.metadata.name, "namespace": workflow.metadata.namespace or "default",
            "phase": run.phase, "startedAt": run.started_at, "finishedAt": run.finished_at, "steps": mine}


def workflow_of(manifests_yaml: str, name: str) -> Workflow | None:
    """The Workflow named ``name`` among a run's manifests (YAML text); None when it is not there."""
    named = [d.resource for d in parse_documents(parse_yaml(manifests_yaml, "manifests.yaml"))
             if isinstance(d.resource, Workflow) and d.resource.metadata.name == name]
    return named[0] if named else None


class RunArchive(Protocol):
    """Where the operator keeps its runs (agentflow.storage.postgres.PostgresStore)."""

    async def recent_runs(self, namespace: str, *, limit: int, workflow: str | None = None,
                          exclude_run: str | None = None) -> list[StoredRun]: ...

    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]: ...


class StoredEpisodes:
    """Past runs from the operator's journal: the newest ``scan`` runs of the namespace are read, and those in
    which the Agent ran a step answered, newest first. A run whose manifests or journal cannot be read is left out
    (logged), so one damaged run does not hide the others; the archive being unreachable is MemoryUnavailable."""

    def __init__(self, archive: RunArchive, *, scan: int = 50) -> None:
        self.archive = archive
        self.scan = scan

    async def past_runs(self, scope: Scope, *, limit: int = 5, workflow: str | None = None,
                        exclude_run: str | None = None) -> list[Episode]:
        agent = scope.one_agent()
        try:
            runs = await self.archive.recent_runs(scope.namespace, limit=max(self.scan, limit), workflow=workflow,
                                                  exclude_run=exclude_run)
        except StorageError as exc:  # the tool answers that, the loop goes on
            raise MemoryUnavailable(f"past runs could not be read: {exc}") from None
        out: list[Episode] = []
        for run in runs:
            if len(out) >= limit:
                break
            try:
                found = workflow_of(run.manifests, run.workflow)
                if found is None or not _agent_steps(found, agent):
                    continue
                records = await self.archive.load_journal(run.run_uid)
            except ManifestError as exc:
                log.warning("past runs: run %s left out: %s", run.run_uid, exc)
                continue
            except StorageUnavailable as exc:
                raise MemoryUnavailable(f"past runs could not be read: {exc}") from None
            except StorageError as exc:  # this run's journal is damaged: the others are still worth answering
                log.warning("past runs: run %s left out: %s", run.run_uid, exc)
                continue
            made = episode(run.run_uid, found, [r.event for r in records], agent)
            if made is not None:
                out.append(made)
        return out


class NoEpisodes:
    """The source where past runs are not available (a gateway that holds no journal)."""

    def __init__(self, why: str = "past runs are not available to agents here (this gateway reads no journal); "
                                  "read the Workflow's status or `agentflow events`") -> None:
        self.why = why

    async def past_runs(self, scope: Scope, *, limit: int = 5, workflow: str | None = None,
                        exclude_run: str | None = None) -> list[Episode]:
        raise MemoryUnavailable(self.why, retryable=False)
