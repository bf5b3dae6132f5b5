"""Retention (issue 17): finished Workflows deleted when their TTL passes, and the rows of deleted ones collected.

::

    expire(body, wakeup, stopped)   in the Workflow's kopf daemon once its run finished: when k8s.retention.expiry
                                    says (re-read from the live body each time it changes, so an edited TTL counts;
                                    computed from the status, so a restarted operator keeps the same deadline),
                                    status.expiresAt, then at that time a TTLExpired Event and the delete (uid
                                    precondition: a Workflow of the same name created since is another run)
    collect(uid)                    on the Workflow's DELETED watch event (whoever deleted it: the TTL, a user, a
                                    schedule's history limit, its namespace): its rows, in one transaction
                                    (agentflow.storage.retention says what goes and what stays)
    sweep()                         at start and every hour: runs with rows whose Workflow no longer exists
                                    (deleted while the operator was down, a collection that failed, a step pod
                                    posting after the delete). Rows are read FIRST, Workflows listed AFTER; a list
                                    that fails collects nothing; an operator watching some namespaces collects only
                                    runs known to be in them (kopf's namespace globs understood)

Collection is best effort at the DELETED event (a failure is logged; the next sweep collects it). The sweep
assumes one operator installation per database: two clusters' operators sharing one database would each see
the other's runs as orphans (``--no-orphan-sweep`` turns it off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..k8s.kube import Kube, KubeError
from ..k8s.retention import Expiry, expired_event, expiry, plain_namespaces, watched
from ..k8s.status import rfc3339
from ..models import RunTtl
from ..storage.errors import StorageError
from ..storage.retention import Collected, RunRef
from .driver import Stopped, nap

__all__ = ["ORPHAN_SWEEP_SECONDS", "RunRetention", "SweepAborted"]

log = logging.getLogger("agentflow.retention")

WORKFLOWS = "workflows"
ORPHAN_SWEEP_SECONDS = 3600.0
"""How often runs whose Workflow is gone are looked for (and at start)."""
SWEEP_RETRY_SECONDS = 60.0
"""After a sweep that failed (the API or the database away)."""
LEADER_RECHECK_SECONDS = 30.0
"""How often a replica that is not the sweep's leader (``--shards auto``) looks whether it became it."""
COLLECT_BATCH = 100
"""Orphaned runs collected per transaction."""


class RunRows(Protocol):
    """The run rows in PostgreSQL (agentflow.storage.postgres.PostgresStore)."""

    async def runs(self) -> list[RunRef]: ...
    async def collect(self, run_uids: Sequence[str]) -> Collected: ...


class SweepAborted(Exception):
    """The sweep could not see every Workflow it would judge: nothing was collected."""


class RunRetention:
    def __init__(self, kube: Kube, rows: RunRows, *, default: RunTtl | None = None,
                 namespaces: Sequence[str] = (), forget: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``default``: the operator's --ttl-seconds-after-finished; ``namespaces``: the ones watched (empty:
        all); ``forget``: drop what this process keeps of a run in memory (the reconciler's and the metrics')."""
        self.kube = kube
        self.rows = rows
        self.default = default
        self.namespaces = tuple(namespaces)
        self.forget = forget
        self.clock = clock

    # ------------------------------------------------------------------ TTL

    async def expire(self, body: Mapping[str, Any], wakeup: asyncio.Event, stopped: Stopped) -> bool:
        """Wait until the finished Workflow's TTL passes, then delete it: True when deleted. Returns False when
        ``stopped`` (deleted by someone else, or the operator stops). ``body`` is kopf's live view."""
        shown: str | None = (body.get("status") or {}).get("expiresAt")
        while not stopped:
            wakeup.clear()
            found = expiry(body, self.default)
            expires = rfc3339(found.at) if found is not None else None
            if expires != shown:
                shown = await self._show(body, expires)
            now = self.clock()
            if found is not None and found.due(now):
                try:
                    await self._delete(body, found, now)
                    return True
                except KubeError as exc:  # the API is away or forbids it: tried again, the deadline stays
                    meta = body["metadata"]
                    log.warning("could not delete the expired workflow %s/%s, retrying in %.0fs: %s",
                                meta["namespace"], meta["name"], SWEEP_RETRY_SECONDS, exc)
                    await nap(wakeup, stopped, SWEEP_RETRY_SECONDS)
                    continue
            wait = 3600.0 if found is None else max(found.at - now, 0.0)
            await nap(wakeup, stopped, min(wait, 3600.0))
        return False

    async def _show(self, body: Mapping[str, Any], expires: str | None) -> str | None:
        meta = body["metadata"]
        try:
            await self.kube.patch_status(WORKFLOWS, meta["namespace"], meta["name"], {"expiresAt": expires})
        except KubeError as exc:  # shown on the next change; the deadline does not depend on it
            log.info("could not show when %s/%s expires: %s", meta["namespace"], meta["name"], exc)
            return None
        return expires

    async def _delete(self, body: Mapping[str, Any], found: Expiry, now: float) -> None:
        meta = body["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        try:
            await self.kube.create_event(namespace, expired_event(body, found, now))
        except KubeError as exc:  # Events are best effort
            log.info("could not record TTLExpired on %s/%s: %s", namespace, name, exc)
        log.info("%s/%s: deleting: %s", namespace, name, found.describe())
        await self.kube.delete_resource(WORKFLOWS, namespace, name, uid=uid)

    # ------------------------------------------------------------------ collection

    async def collect(self, run_uid: str, what: str = "deleted") -> Collected | None:
        """Collect the rows of one run whose Workflow is gone; None (logged) when the database failed."""
        if self.forget is not None:
            self.forget(run_uid)
        try:
            collected = await self.rows.collect([run_uid])
        except StorageError as exc:
            log.warning("run %s (%s): its rows were not collected (the next sweep does it): %s", run_uid, what, exc)
            return None
        log.info("run %s (%s): collected %d row(s) %s", run_uid, what, collected.total, _summary(collected))
        return collected

    async def orphans(self) -> list[str]:
        """The runs with rows whose Workflow does not exist; SweepAborted when the Workflows cannot all be seen."""
        stored = await self.rows.runs()  # FIRST: a run with rows now has a Workflow created before now
        try:
            if self.namespaces and plain_namespaces(self.namespaces):
                listed = [body for ns in self.namespaces for body in await self.kube.list_resources(WORKFLOWS, ns)]
            else:  # every namespace, or globs (kopf's patterns): the whole cluster's, judged by pattern below
                listed = await self.kube.list_resources_all(WORKFLOWS)
        except KubeError as exc:
            raise SweepAborted(f"the Workflows could not be listed ({exc}); nothing is collected on a partial "
                               "view") from None
        alive = {str((body.get("metadata") or {}).get("uid")) for body in listed}
        return [ref.run_uid for ref in stored if ref.run_uid not in alive
                and (not self.namespaces or (ref.namespace is not None and watched(ref.namespace, self.namespaces)))]

    async def sweep(self) -> Collected:
        """Collect the rows of every run whose Workflow is gone (see :meth:`orphans`)."""
        orphans = await self.orphans()
        total = Collected()
        for i in range(0, len(orphans), COLLECT_BATCH):
            batch = orphans[i:i + COLLECT_BATCH]
            for uid in batch:
                if self.forget is not None:
                    self.forget(uid)
            total.add(await self.rows.collect(batch))
        if orphans:
            log.info("collected %d run(s) whose Workflow is gone: %d row(s) %s", len(orphans), total.total,
                     _summary(total))
        return total

    async def run(self, stopped: asyncio.Event, interval: float = ORPHAN_SWEEP_SECONDS,
                  leader: Callable[[], bool] = lambda: True) -> None:
        """Sweep at once, then every ``interval`` seconds, until ``stopped`` is set (retried after a failure).
        With several replicas sharing the work only the ``leader`` sweeps; the others look again every
        LEADER_RECHECK_SECONDS whether they became it (a sweep on two replicas at once is safe, only wasted)."""
        while not stopped.is_set():
            delay = interval
            if not leader():
                delay = LEADER_RECHECK_SECONDS
            else:
                try:
                    await self.sweep()
                except (SweepAborted, KubeError, StorageError) as exc:
                    log.warning("orphaned runs not collected this time, retrying in %.0fs: %s", SWEEP_RETRY_SECONDS,
                                exc)
                    delay = SWEEP_RETRY_SECONDS
            try:
                await asyncio.wait_for(stopped.wait(), timeout=delay)
            except TimeoutError:
                continue


def _summary(collected: Collected) -> str:
    parts = [f"{table.removeprefix('agentflow_')} {n}" for table, n in sorted(collected.rows.items()) if n]
    return f"({', '.join(parts)})" if parts else ""
