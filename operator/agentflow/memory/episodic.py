"""Episodic memory: an Agent's previous runs, read-only, as plain JSON (what the ``past_runs`` tool answers).

    EpisodeSource.past_runs(scope, limit=5, workflow=None, exclude_run=None) -> list[Episode], newest first

An :class:`Episode` is one run in which the Agent ran at least one step: the run, its Workflow, its phase and
times, and the Agent's steps in it (phase, output or error, each cut to :data:`PREVIEW_CHARS`). Sources:
``agentflow.runner.episodes.LocalEpisodes`` (the local runner's journals). On a cluster no source is wired yet:
the tool answers that past runs are not available there (the Workflow's status and ``agentflow events`` hold
them); :class:`NoEpisodes` is that answer.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, TypedDict

from .records import MemoryUnavailable, Scope

__all__ = ["PREVIEW_CHARS", "Episode", "EpisodeSource", "EpisodeStep", "NoEpisodes", "preview"]

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


class NoEpisodes:
    """The source where past runs are not available (a cluster, for now)."""

    def __init__(self, why: str = "past runs are not available to agents on a cluster yet; read the Workflow's "
                                  "status or `agentflow events`") -> None:
        self.why = why

    async def past_runs(self, scope: Scope, *, limit: int = 5, workflow: str | None = None,
                        exclude_run: str | None = None) -> list[Episode]:
        raise MemoryUnavailable(self.why, retryable=False)
