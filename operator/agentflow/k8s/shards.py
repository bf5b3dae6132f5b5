"""Sharding Workflows over operator replicas (issue 17): membership by Leases, ownership by rendezvous hashing. PURE.

Every replica holds a ``coordination.k8s.io/v1`` Lease of its own in the operator's namespace (labelled
:data:`GROUP_LABEL`), renews it every ``renew`` seconds and lists the group's Leases in the same round. A
Workflow (any key: its uid) belongs to the live member with the highest ``sha256(member, key)`` (rendezvous or
highest-random-weight hashing), so a member joining or leaving moves only the keys it wins or held, ~1/N::

    owner(key, members) = max(members, by sha256(member "\\n" key))      one answer for the same members

Liveness is judged on each observer's own monotonic clock, never by comparing clocks: a Lease is live while its
``renewTime`` changed less than its ``leaseDurationSeconds`` ago *as this observer saw it* (client-go's leader
election does the same). A Lease gone from the list (deleted at a graceful stop) is gone at once.

Rebalance safety: a replica stops acting on a key BEFORE another starts::

    newcomer   acts only once ``duration`` has passed since its Lease was first written: by then every active
               member has listed the Leases again and dropped the keys the newcomer wins
    member     acts only while its last complete round (renew AND list) started less than ``duration - renew``
               ago: a replica cut off from the API server stops before the others, who count ``duration`` from
               their observation of its last renew (which came after that round started), take its keys over;
               and its view of the members is never older than that, so it has seen any newcomer that could act
    leaver     (a graceful stop) drops everything at once, then deletes its Lease

What this cannot rule out (a paused process, a reconcile already past its last ownership check) is caught where
it matters: the journal append is fenced by sequence number (storage.postgres, PRIMARY KEY (run_uid, seq)) and a
step pod's name is deterministic (creating it again is 409 AlreadyExists), so no step starts twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_DURATION_SECONDS",
    "DEFAULT_RENEW_SECONDS",
    "GROUP_LABEL",
    "LEADER_KEY",
    "Membership",
    "View",
    "lease_body",
    "lease_name",
    "owner",
    "renew_patch",
    "score",
]

GROUP_LABEL = "agentflow.dev/shard-group"
"""The label of the Leases of one group of replicas (its value: the group's name, by default ``agentflow``)."""
DEFAULT_DURATION_SECONDS = 10
DEFAULT_RENEW_SECONDS = 2.0
LEADER_KEY = "agentflow.dev/leader"
"""The key whose owner runs the cluster-wide singletons (the orphan sweep): a leader by the same hashing."""
_NAME = re.compile(r"[^a-z0-9-]+")


def score(member: str, key: str) -> int:
    """The weight of ``member`` for ``key``: the first 8 bytes of sha256(member "\\n" key)."""
    return int.from_bytes(hashlib.sha256(f"{member}\n{key}".encode()).digest()[:8], "big")


def owner(key: str, members: Iterable[str]) -> str | None:
    """The member that owns ``key``: the highest score (ties, which need equal hashes, to the larger name)."""
    return max(members, key=lambda m: (score(m, key), m), default=None)


def lease_name(group: str, replica: str) -> str:
    """The Lease of ``replica``: ``GROUP-REPLICA`` as a DNS name, with a hash when cleaning or cutting changed it."""
    raw = f"{group}-{replica}"
    clean = _NAME.sub("-", raw.lower()).strip("-")
    if clean == raw and len(clean) <= 63:
        return clean
    return f"{clean[:50].rstrip('-')}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def lease_body(namespace: str, group: str, replica: str, *, duration: int, now: str) -> dict[str, Any]:
    """A replica's Lease, first written (``now``: RFC 3339 with microseconds, the MicroTime of the API)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease_name(group, replica), "namespace": namespace,
                     "labels": {GROUP_LABEL: group, "app.kubernetes.io/managed-by": "agentflow"}},
        "spec": {"holderIdentity": replica, "leaseDurationSeconds": duration, "acquireTime": now, "renewTime": now},
    }


def renew_patch(replica: str, *, duration: int, now: str) -> dict[str, Any]:
    """The merge patch of a renewal (holder and duration written again: a Lease edited by hand is put right)."""
    return {"spec": {"holderIdentity": replica, "leaseDurationSeconds": duration, "renewTime": now}}


@dataclasses.dataclass(frozen=True)
class View:
    """What a replica acts on: whether it may act at all, and the live members (itself included when active)."""

    active: bool
    members: tuple[str, ...]

    def owns(self, me: str, key: str) -> bool:
        return self.active and owner(key, self.members) == me


@dataclasses.dataclass
class _Seen:
    renew_time: str
    since: float  # this observer's clock when it first saw that renewTime
    duration: float


class Membership:
    """One replica's view of its group, from the Leases it listed and the rounds it completed; ``now`` is a
    monotonic clock of this process, passed in (never read here)."""

    def __init__(self, me: str, *, duration: float = DEFAULT_DURATION_SECONDS,
                 renew: float = DEFAULT_RENEW_SECONDS) -> None:
        if not 0 < renew < duration / 2:
            raise ValueError(f"the renew interval ({renew}s) must be above 0 and under half the lease duration "
                             f"({duration}s): a member must renew at least twice before the others drop it")
        self.me = me
        self.duration = float(duration)
        self.renew = float(renew)
        self._seen: dict[str, _Seen] = {}
        self._joined: float | None = None
        self._round: float | None = None
        self._left = False

    def observe(self, leases: Sequence[Mapping[str, Any]], now: float) -> None:
        """The group's Leases as just listed: a renewTime that changed counts from ``now``; a Lease not listed is
        gone (its holder stopped and deleted it, or someone else did)."""
        seen: dict[str, _Seen] = {}
        for lease in leases:
            spec = lease.get("spec") or {}
            holder, renewed = spec.get("holderIdentity"), spec.get("renewTime") or spec.get("acquireTime")
            if not holder or not renewed:
                continue  # released, or not written by a replica: nobody
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            before = self._seen.get(str(holder))
            since = before.since if before is not None and before.renew_time == renewed else now
            seen[str(holder)] = _Seen(str(renewed), since, duration)
        self._seen = seen

    def completed(self, started: float, *, created: bool = False) -> None:
        """A round that started at ``started`` renewed this replica's Lease and listed the group's (in that order).
        It is a newcomer again after a gap longer than the lease duration, or when the round had to create its
        Lease (``created``: someone deleted it, and the others dropped this replica meanwhile)."""
        if self._left:
            return
        if created or self._joined is None or self._round is None or started - self._round >= self.duration:
            self._joined = started
        self._round = started

    def leave(self) -> None:
        """A graceful stop: act on nothing from now on (the Lease is deleted next)."""
        self._left = True

    def active(self, now: float) -> bool:
        """Whether this replica may act: joined at least a lease duration ago, and its last complete round
        recent enough that the others still count it and it has seen every member that could act."""
        if self._left or self._joined is None or self._round is None:
            return False
        return now - self._joined >= self.duration and now - self._round < self.duration - self.renew

    def live(self, now: float) -> tuple[str, ...]:
        """The members counted now, sorted: Leases renewed within their duration as seen here, and this replica
        when it is active (whatever its Lease's last listing said)."""
        members = {h for h, s in self._seen.items() if h != self.me and now - s.since < s.duration}
        if self.active(now):
            members.add(self.me)
        return tuple(sorted(members))

    def view(self, now: float) -> View:
        return View(self.active(now), self.live(now))
