"""The seam between the console's HTTP API and where runs live.

:class:`RunSource` is what the API needs of runs; two implementations:

    agentflow.console.local.LocalRunSource     the runs of `agentflow run` in a state directory
    agentflow.console.cluster.ClusterRunSource Workflows in a cluster, read and steered with the signed-in
                                               user's own Kubernetes identity (+ the PostgreSQL journal)

Every call names its :class:`Caller`: who acts, and (in the cluster) the bearer token the API server
judges, so RBAC decides what each person sees and does.

Errors (agentflow.console.errors) say what to do and carry the HTTP status the API answers with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Protocol

__all__ = ["Caller", "RunFilter", "RunSnapshot", "RunSource"]


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes a request: the name recorded with a decision, and the credential the cluster checks."""

    user: str
    token: str | None = None


@dataclasses.dataclass(frozen=True)
class RunFilter:
    namespace: str | None = None
    label: str | None = None  # KEY=VALUE or KEY
    phase: str | None = None

    def matches_labels(self, labels: dict[str, str]) -> bool:
        if not self.label:
            return True
        key, sep, value = self.label.partition("=")
        return key in labels and (not sep or labels[key] == value)


@dataclasses.dataclass(frozen=True)
class RunSnapshot:
    """A run's graph as of journal record ``seq`` (-1: none yet)."""

    graph: dict[str, Any]
    seq: int


class RunSource(Protocol):
    """Where the console reads runs from and sends actions to."""

    mode: str  # "local" | "cluster"

    async def list_runs(self, caller: Caller, where: RunFilter) -> list[dict[str, Any]]: ...
    async def snapshot(self, caller: Caller, ref: str) -> RunSnapshot: ...
    async def node(self, caller: Caller, ref: str, node: str) -> dict[str, Any]: ...
    async def watch(self, caller: Caller, ref: str, after: int) -> AsyncIterator[dict[str, Any]]:
        """Updates after record ``after``: ``{"seq", "run", "nodes"}`` with only the graph nodes that changed.

        Checks the run first (NotFound, Forbidden raise here, before any update), then returns the updates.
        """
        ...
    async def decide(self, caller: Caller, ref: str, node: str, approved: bool, reason: str) -> dict[str, Any]: ...
    async def cancel(self, caller: Caller, ref: str, reason: str) -> dict[str, Any]: ...
    async def resume(self, caller: Caller, ref: str) -> dict[str, Any]: ...
    async def retry(self, caller: Caller, ref: str) -> dict[str, Any]: ...
    async def replay(self, caller: Caller, ref: str) -> dict[str, Any]: ...
    async def diff(self, caller: Caller, a: str, b: str) -> dict[str, Any]: ...
    async def start(self, caller: Caller, manifests_yaml: str, workflow: str | None) -> dict[str, Any]: ...
    async def start_template(self, caller: Caller, namespace: str, template: str, kind: str,
                             inputs: dict[str, Any], name: str | None, labels: dict[str, str]) -> dict[str, Any]: ...
    async def result(self, caller: Caller, ref: str) -> dict[str, Any]: ...
    async def audit(self, caller: Caller) -> dict[str, Any]: ...
    async def close(self) -> None: ...
