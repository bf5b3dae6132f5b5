"""The local runner's episodic memory: an Agent's previous runs, read from the journals in the state dir.

:class:`LocalEpisodes` is the agentflow.memory.EpisodeSource of local runs: newest run first, each run whose
manifests have a step (or a state's step) run by the Agent, in the Agent's namespace (``default`` when the
manifest names none). Read-only: it opens journals and manifests, never writes. A run whose files cannot be
read is left out (its id is logged), so one damaged run does not hide the others.
"""

from __future__ import annotations

import asyncio
import logging

from ..memory.episodic import Episode, episode, workflow_of
from ..memory.records import Scope
from ..models import ManifestError
from .store import RunStore, StoreError

__all__ = ["LocalEpisodes"]

log = logging.getLogger(__name__)


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
                workflow_doc = workflow_of(run.manifests_yaml, info.workflow)
                events = [r.event for r in run.read_records()]
            except (StoreError, ManifestError) as exc:
                log.warning("past runs: run %s left out: %s", info.run_id, exc)
                continue
            if workflow_doc is None or (workflow_doc.metadata.namespace or "default") != scope.namespace:
                continue
            found = episode(info.run_id, workflow_doc, events, agent)
            if found is not None:
                out.append(found)
        return out
