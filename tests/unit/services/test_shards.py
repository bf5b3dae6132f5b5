"""Shard membership over Leases (agentflow.services.shards) in virtual time, and a Workflow's daemon acting only
while its replica owns it; the --shards flags."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentflow.controller.main import build_parser, shard_settings
from agentflow.k8s.kube import KubeError
from agentflow.k8s.shards import LEADER_KEY, owner
from agentflow.services import retention as retention_module
from agentflow.services.retention import RunRetention
from agentflow.services.shards import Everything, ShardMembership, while_owned
from agentflow.testing import FakeKube, MemoryStore

from .test_driver import Stop

NS = "agentflow-system"
KEYS = [f"uid-{i}" for i in range(200)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(kube: FakeKube, name: str, clock: Clock, changes: list[str] | None = None) -> ShardMembership:
    return ShardMembership(kube, NS, name, duration=10, renew=2, clock=clock, wall=lambda: clock.now,
                           on_change=lambda: changes.append(name) if changes is not None else None)


async def tick(clock: Clock, *replicas: ShardMembership, seconds: float = 2.0) -> None:
    for r in replicas:
        await r.round()
    clock.now += seconds


async def test_two_replicas_split_the_keys_and_a_dead_ones_move_after_the_lease() -> None:
    kube, clock, changes = FakeKube(), Clock(), []
    a, b = replica(kube, "op-a", clock, changes), replica(kube, "op-b", clock, changes)
    for _ in range(6):
        await tick(clock, a, b)
    assert a.view.members == b.view.members == ("op-a", "op-b") and changes.count("op-a") >= 1
    for key in KEYS:  # each key owned by exactly one of them, the one the hash names
        assert a.owns(key) != b.owns(key)
        assert (owner(key, ["op-a", "op-b"]) == "op-a") == a.owns(key)
    assert sorted(kube.leases) == [(NS, "agentflow-op-a"), (NS, "agentflow-op-b")]
    # op-b stops renewing (killed): op-a takes its keys once op-b's last renewal is a lease duration old
    seen_b = clock.now
    while clock.now - seen_b < 12.0:
        moved = all(a.owns(k) for k in KEYS)
        assert not moved or clock.now - seen_b >= 10.0
        await tick(clock, a)
    assert all(a.owns(k) for k in KEYS) and a.view.members == ("op-a",)


async def test_a_graceful_stop_hands_over_at_the_next_round() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = replica(kube, "op-a", clock), replica(kube, "op-b", clock)
    for _ in range(6):
        await tick(clock, a, b)
    await b.stop()
    assert not any(b.owns(k) for k in KEYS) and (NS, "agentflow-op-b") not in kube.leases
    await tick(clock, a, seconds=0.1)
    assert all(a.owns(k) for k in KEYS)


async def test_a_newcomer_waits_and_the_others_let_go_first() -> None:
    kube, clock = FakeKube(), Clock()
    a = replica(kube, "op-a", clock)
    for _ in range(6):
        await tick(clock, a)
    b = replica(kube, "op-b", clock)
    await tick(clock, b, a)  # b writes its Lease, a lists it at once
    wins_b = [k for k in KEYS if owner(k, ["op-a", "op-b"]) == "op-b"]
    assert wins_b and not any(a.owns(k) for k in wins_b) and not any(b.owns(k) for k in wins_b)
    for _ in range(4):
        await tick(clock, b, a)
    assert not any(b.owns(k) for k in wins_b)  # 8 s: still waiting
    await tick(clock, b, a)
    await b.round()
    assert all(b.owns(k) for k in wins_b) and not any(a.owns(k) for k in wins_b)


async def test_a_replica_whose_lease_was_deleted_is_a_newcomer_again() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = replica(kube, "op-a", clock), replica(kube, "op-b", clock)
    for _ in range(6):
        await tick(clock, a, b)
    assert a.owns(KEYS[0]) != b.owns(KEYS[0])
    del kube.leases[(NS, "agentflow-op-b")]  # kubectl delete lease: op-a drops op-b at its next round
    await tick(clock, a, b, seconds=0.5)  # op-a lists first and takes everything; op-b writes its Lease again
    assert all(a.owns(k) for k in KEYS) and not any(b.owns(k) for k in KEYS)
    for _ in range(4):
        await tick(clock, a, b)
    assert not any(b.owns(k) for k in KEYS)  # waits a lease duration, as a newcomer
    for _ in range(2):
        await tick(clock, b, a)
    assert all(a.owns(k) != b.owns(k) for k in KEYS)


async def test_a_replica_cut_off_from_the_api_acts_on_nothing_before_the_others_take_over() -> None:
    kube, clock = FakeKube(), Clock()
    a = replica(kube, "op-a", clock)
    for _ in range(6):
        await tick(clock, a)
    assert a.owns(KEYS[0])
    kube.lease_error = KubeError("cannot reach the API server")
    last = clock.now - 2.0  # the start of a's last complete round
    with pytest.raises(KubeError):
        await a.round()
    clock.now = last + 7.9
    assert a.owns(KEYS[0])
    clock.now = last + 8.0  # duration - renew: the others count from their view of the renewal, 10 s or later
    assert not a.owns(KEYS[0])
    with pytest.raises(KubeError):
        await a.round()
    assert not a.view.active


async def test_renewals_run_in_a_thread_of_their_own_and_tell_the_operators_loop() -> None:
    kube = FakeKube()
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    calls: list[asyncio.AbstractEventLoop] = []

    def on_change() -> None:
        calls.append(asyncio.get_running_loop())
        changed.set()

    a = ShardMembership(kube, NS, "op-a", duration=1, renew=0.05, on_change=on_change)
    kube.lease_error = KubeError("away")  # a failed round: logged, the next one tries again
    a.start()
    try:
        await asyncio.sleep(0.2)
        assert (NS, "agentflow-op-a") not in kube.leases and not a.view.active
        kube.lease_error = None
        await asyncio.wait_for(changed.wait(), 5.0)  # active a lease duration after its first round
        assert a.view.active and a.owns("uid-1") and calls and all(c is loop for c in calls)
        # the operator's loop blocked (a burst of CPU-bound reconciles): the renewals go on meanwhile
        renewed = kube.leases[(NS, "agentflow-op-a")]["spec"]["renewTime"]
        time.sleep(0.3)
        assert kube.leases[(NS, "agentflow-op-a")]["spec"]["renewTime"] != renewed and a.owns("uid-1")
    finally:
        await a.stop()
    assert (NS, "agentflow-op-a") not in kube.leases and not a.owns("uid-1")


class Switch:
    """An ownership turned on and off by the test."""

    def __init__(self, owned: bool) -> None:
        self.owned = owned

    def owns(self, key: str) -> bool:
        return self.owned


async def test_a_daemon_acts_only_while_owned_and_picks_up_a_moved_workflow_at_once() -> None:
    ownership, wakeup, stopped = Switch(False), asyncio.Event(), Stop()
    runs: list[str] = []
    lost: list[str] = []
    release = asyncio.Event()

    async def work(stop: Any) -> None:
        runs.append("start")
        while not stop and not release.is_set():
            await asyncio.sleep(0.005)
        runs.append("stopped" if stop else "done")

    task = asyncio.create_task(while_owned(ownership, "uid-1", wakeup, stopped, work, lost=lambda: lost.append("x")))
    await asyncio.sleep(0.05)
    assert runs == []  # not owned: waits
    ownership.owned = True
    wakeup.set()  # the membership changed
    await asyncio.sleep(0.05)
    assert runs == ["start"]
    ownership.owned = False  # moved away: work stops, the daemon waits again
    await asyncio.sleep(0.05)
    assert runs == ["start", "stopped"] and lost == ["x"]
    ownership.owned = True
    wakeup.set()
    await asyncio.sleep(0.05)
    release.set()  # finished while owned: the daemon ends
    await asyncio.wait_for(task, 1.0)
    assert runs == ["start", "stopped", "start", "done"]


async def test_kopfs_stop_ends_a_waiting_daemon() -> None:
    stopped, wakeup = Stop(), asyncio.Event()

    async def work(stop: Any) -> None:
        raise AssertionError("never owned")

    task = asyncio.create_task(while_owned(Switch(False), "uid-1", wakeup, stopped, work))
    await asyncio.sleep(0.01)
    stopped.set = True
    wakeup.set()
    await asyncio.wait_for(task, 1.0)


async def test_only_the_leader_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention_module, "LEADER_RECHECK_SECONDS", 0.01)
    retention = RunRetention(FakeKube(), MemoryStore())
    sweeps: list[int] = []

    async def sweep() -> Any:
        sweeps.append(1)

    monkeypatch.setattr(retention, "sweep", sweep)
    leader = Switch(False)
    stopped = asyncio.Event()
    task = asyncio.create_task(retention.run(stopped, interval=3600, leader=lambda: leader.owns(LEADER_KEY)))
    await asyncio.sleep(0.05)
    assert sweeps == []
    leader.owned = True
    await asyncio.sleep(0.05)
    assert sweeps == [1]
    stopped.set()
    await asyncio.wait_for(task, 1.0)


def test_everything_owns_every_key() -> None:
    assert all(Everything().owns(k) for k in KEYS)


def flags(*argv: str) -> Any:
    args = build_parser().parse_args(["--postgres-dsn", "x", *argv])
    shard_settings(args)
    return args


def test_shard_flags_are_checked_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert flags().shards == "off"
    args = flags("--shards", "auto", "--shard-namespace", NS, "--replica-id", "op-a")
    assert (args.shard_lease_seconds, args.shard_renew_seconds, args.shard_group) == (10, 2.0, "agentflow")
    with pytest.raises(SystemExit, match="--peering: give one"):
        flags("--shards", "auto", "--shard-namespace", NS, "--peering", "agentflow")
    with pytest.raises(SystemExit, match="needs --shard-namespace"):
        flags("--shards", "auto")
    with pytest.raises(SystemExit, match="--replica-id: empty"):
        flags("--shards", "auto", "--shard-namespace", NS, "--replica-id", " ")
    with pytest.raises(SystemExit, match="under half"):
        flags("--shards", "auto", "--shard-namespace", NS, "--shard-renew-seconds", "5")
    with pytest.raises(SystemExit):
        flags("--shard-lease-seconds", "0")
