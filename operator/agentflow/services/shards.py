"""Work shared by N operator replicas (``agentflow operator --shards auto``, issue 17).

The decisions are pure (agentflow.k8s.shards: rendezvous hashing of a Workflow's uid over the live members,
the newcomer's wait, the self-fence); this module does the I/O and wires them into the operator::

    ShardMembership.start (at startup)           a thread of its own with its own event loop: every renew
                                                  seconds patch (or create) this replica's Lease, list the group's,
                                                  Membership.observe/completed; when the view changes (a member came
                                                  or went, this replica turned active or inactive): on_change() on
                                                  the operator's loop, which wakes every Workflow's daemon
    ShardMembership.stop (cleanup)                stop the thread; leave: act on nothing, wake the daemons, delete the
                                                  Lease, so the others take over at their next round (not a lease
                                                  later)

Why a thread: the renewals must not depend on the operator's event loop, which a burst of reconciles keeps busy
(plans compiled, journals hashed, every API call queued on the same default thread pool). Renewing from that loop,
a busy replica missed its self-fence deadline and dropped all its work every few seconds under load. ``owns`` is
read from the operator's loop: Membership's fields are replaced whole (a float, a new dict), never mutated in place.
    while_owned(ownership, uid, wakeup, stopped, work)
                                                  the Workflow's kopf daemon on EVERY replica: waits until this
                                                  replica owns the uid, runs ``work`` (drive, then the TTL) with a
                                                  stop that also turns true when ownership goes, and waits again

kopf runs a Workflow's daemon on every replica (kopf peering is off in this mode), so a Workflow moved to a
replica is picked up at once from the daemon already waiting there: kopf re-runs nothing without a watch event,
and nothing here needs one. Losing a Workflow drops what the reconciler keeps of it in memory (``forget``), so
taking it back later reads the journal again. ``Everything`` is the ownership of a replica that shards nothing
(``--shards off``, the default): it owns every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..k8s.kube import KubeError, Leases, NotFound
from ..k8s.shards import (
    DEFAULT_DURATION_SECONDS,
    DEFAULT_RENEW_SECONDS,
    GROUP_LABEL,
    Membership,
    View,
    lease_body,
    lease_name,
    renew_patch,
)
from .driver import Stopped

__all__ = ["Everything", "Ownership", "ShardMembership", "while_owned"]

log = logging.getLogger("agentflow.shards")

WAIT_SECONDS = 5.0
"""How often a daemon waiting for its Workflow looks at kopf's stop flag (a membership change wakes it at once)."""


class Ownership(Protocol):
    def owns(self, key: str) -> bool: ...


class Everything:
    """One replica, or kopf peering: this process owns every key."""

    def owns(self, key: str) -> bool:
        return True


def micro_time(seconds: float) -> str:
    """RFC 3339 with microseconds: the API's MicroTime (a Lease's renewTime)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ShardMembership:
    """This replica's Lease kept, the group's read, and the view the daemons act on."""

    def __init__(self, leases: Leases, namespace: str, replica: str, *, group: str = "agentflow",
                 duration: int = DEFAULT_DURATION_SECONDS, renew: float = DEFAULT_RENEW_SECONDS,
                 on_change: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.membership = Membership(replica, duration=duration, renew=renew)
        self.leases = leases
        self.namespace = namespace
        self.replica = replica
        self.group = group
        self.duration = duration
        self.renew = renew
        self.on_change = on_change
        self.clock = clock
        self.wall = wall
        self.name = lease_name(group, replica)
        self.selector = f"{GROUP_LABEL}={group}"
        self._view = View(False, ())
        self._main: asyncio.AbstractEventLoop | None = None  # where on_change runs (set by start)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def view(self) -> View:
        return self._view

    def owns(self, key: str) -> bool:
        """Whether this replica acts on ``key`` now (the view of the last look, at most ``renew`` seconds old;
        an expired self-fence counts at once)."""
        return self.membership.active(self.clock()) and self._view.owns(self.replica, key)

    async def round(self) -> None:
        """Renew (or create) this replica's Lease, list the group's, update the view; KubeError when the API
        refused one of them (the view is updated all the same: time may have turned this replica inactive)."""
        started = self.clock()
        try:
            now = micro_time(self.wall())
            created = False
            try:
                await self.leases.patch_lease(self.namespace, self.name,
                                              renew_patch(self.replica, duration=self.duration, now=now))
            except NotFound:  # first round, or deleted by someone: a newcomer again (Membership.completed)
                body = lease_body(self.namespace, self.group, self.replica, duration=self.duration, now=now)
                if not await self.leases.create_lease(self.namespace, body):
                    raise KubeError(f"lease {self.namespace}/{self.name}: created by someone else meanwhile; "
                                    "renewed at the next round") from None
                created = True
            listed = await self.leases.list_leases(self.namespace, self.selector)
            self.membership.observe(listed, self.clock())
            self.membership.completed(started, created=created)
        finally:
            self._look()

    def _look(self) -> None:
        view = self.membership.view(self.clock())
        if view != self._view:
            before, self._view = self._view, view
            log.info("shards: replica %s %s, members %s (was %s, %s)", self.replica,
                     "active" if view.active else "not active", ", ".join(view.members) or "none",
                     "active" if before.active else "not active", ", ".join(before.members) or "none")
            if self._main is not None and self._main is not _running_loop():
                self._main.call_soon_threadsafe(self.on_change)
            else:
                self.on_change()

    async def run(self, stopped: threading.Event) -> None:
        """Rounds every ``renew`` seconds until ``stopped``; a failed one is logged and the next tries again (past
        the self-fence this replica acts on nothing until a round gets through)."""
        loop = asyncio.get_running_loop()
        while not stopped.is_set():
            try:
                await self.round()
            except KubeError as exc:
                log.warning("shards: lease round of %s failed (%s); %s", self.replica, exc,
                            "still active" if self._view.active else "acting on nothing")
            except Exception:  # a bug must not end the renewals silently: the replica would fence itself
                log.exception("shards: lease round of %s failed unexpectedly", self.replica)
            await loop.run_in_executor(None, stopped.wait, self.renew)

    def start(self) -> None:
        """Renew in a thread of its own (its own event loop); on_change runs on the calling loop."""
        self._main = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.run(self._stop)), name="agentflow-shards",
                                        daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """A graceful stop: end the renewals, act on nothing from now on, wake the daemons, delete the Lease (best
        effort: else the others take over when it expires)."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
            self._thread = None
        self.membership.leave()
        self._look()
        try:
            await self.leases.delete_lease(self.namespace, self.name)
        except KubeError as exc:
            log.warning("shards: lease %s/%s not deleted (the others wait until it expires): %s", self.namespace,
                        self.name, exc)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _OrLost:
    """kopf's stop flag, or ownership gone."""

    def __init__(self, stopped: Stopped, ownership: Ownership, key: str) -> None:
        self.stopped, self.ownership, self.key = stopped, ownership, key

    def __bool__(self) -> bool:
        return bool(self.stopped) or not self.ownership.owns(self.key)


async def while_owned(ownership: Ownership, key: str, wakeup: asyncio.Event, stopped: Stopped,
                      work: Callable[[Stopped], Awaitable[None]], *, lost: Callable[[], None] = lambda: None) -> None:
    """Run ``work`` whenever this replica owns ``key``, until it returns while still owned (done) or ``stopped``.

    ``work`` gets a stop flag that turns true when ownership goes; it must return soon after (the driver looks
    between reconciles). ``lost`` is called each time it stopped for that reason. ``wakeup`` is set on a
    membership change (and by the Workflow's own events), so a moved Workflow is picked up at once.
    """
    stop = _OrLost(stopped, ownership, key)
    while not stopped:
        if not ownership.owns(key):
            wakeup.clear()
            if not ownership.owns(key):  # looked again after clear: a change in between is not missed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), WAIT_SECONDS)
            continue
        await work(stop)
        if stopped or ownership.owns(key):
            return
        log.info("shards: %s is no longer this replica's (moved to another, or this one stopped acting); let go",
                 key)
        lost()
