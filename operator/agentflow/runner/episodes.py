"""The local runner's episodic memory: an Agent's previous runs, read from the journals in the state dir.

:class:`LocalEpisodes` is the agentflow.memory.EpisodeSource of local runs: newest run first, each run whose
manifests have a step (or a state's step) run by the Agent, in the Agent's namespace (``default`` when the
manifest names none). Read-only: it opens journals and manifests, never writes. A run whose files cannot be
read is left out (its id is logged), so one damaged run does not hide the others.
"""

from __future__ import annotations

import asyncio
import logging

from ..engine.values import Event
from ..memory.episodic import Episode, EpisodeStep, preview
from ..memory.records import Scope
from ..models import ManifestError, Workflow
from ..models.manifests import parse_documents, parse_yaml
from .history import history
from .store import RunStore, StoreError

__all__ = ["LocalEpisodes"]

log = logging.getLogger(__name__)


def _agent_steps(workflow: Workflow, agent: str) -> set[str]:
    return {key for key, step in workflow.spec.keyed_steps()
            if step.agent_ref is not None and step.agent_ref.name == agent}


def _step_of(node: str) -> str:
    """The step (or state) of a node id: ``name``, ``name[i]`` (fan-out) or ``state#visit``."""
    return node.split("[", 1)[0].split("#", 1)[0]


def episode(run_id: str, workflow: Workflow, events: list[Event], agent: str) -> Episode | None:
    """The Episode of one run for ``agent``, None when the Agent ran no step in it."""
    steps = _agent_steps(workflow, agent)
    if not steps:
        return None
    run = history(events)
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


class LocalEpisodes:
    """Past runs of the local runner's state dir (``RunStore``)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    async def past_runs(self, scope: Scope, *, limit: int = 5, workflow: str | None = None,
                        exclude_run: str | None = None) -> list[Episode]:
        return await asyncio.to_thread(self._read, scope, limit, workflow, exclude_run)

    def _read(self, scope: Scope, limit: int, workflow: str | None, exclude_run: str | None) -> list[Episode]:
        agent = scope.one_agent()
        out: list[Episode] = []
        for info in reversed(self.store.list_runs()):
            if len(out) >= limit:
                break
            if info.run_id == exclude_run or (workflow is not None and info.workflow != workflow):
                continue
            try:
                run = self.store.open(info.run_id)
                named = [d.resource for d in parse_documents(parse_yaml(run.manifests_yaml, "manifests.yaml"))
                         if isinstance(d.resource, Workflow) and d.resource.metadata.name == info.workflow]
                events = [r.event for r in run.read_records()]
            except (StoreError, ManifestError) as exc:
                log.warning("past runs: run %s left out: %s", info.run_id, exc)
                continue
            if not named or (named[0].metadata.namespace or "default") != scope.namespace:
                continue
            found = episode(info.run_id, named[0], events, agent)
            if found is not None:
                out.append(found)
        return out
