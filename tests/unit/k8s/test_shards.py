"""Sharding's pure decisions (agentflow.k8s.shards): rendezvous ownership, membership from Leases, rebalance safety."""

from __future__ import annotations

import collections
import uuid

import pytest

from agentflow.k8s.shards import Membership, View, lease_body, lease_name, owner, renew_patch

KEYS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(3000)]


def lease(holder: str, renewed: str, duration: int = 10) -> dict[str, object]:
    return {"spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": duration}}


def test_every_key_has_one_owner_among_the_members_and_the_same_for_any_order() -> None:
    members = ["op-a", "op-b", "op-c"]
    for key in KEYS[:200]:
        assert owner(key, members) == owner(key, list(reversed(members))) in members
    assert owner("k", []) is None


def test_keys_spread_evenly() -> None:
    counts = collections.Counter(owner(k, ["op-a", "op-b", "op-c"]) for k in KEYS)
    assert set(counts) == {"op-a", "op-b", "op-c"}
    for n in counts.values():  # 1000 expected each; binomial sd ~26
        assert 850 < n < 1150, counts


def test_a_member_leaving_moves_only_its_own_keys() -> None:
    before = {k: owner(k, ["op-a", "op-b", "op-c"]) for k in KEYS}
    after = {k: owner(k, ["op-a", "op-c"]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == "op-b" for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == "op-b")


def test_a_member_joining_takes_about_one_nth_and_only_for_itself() -> None:
    before = {k: owner(k, ["op-a", "op-b"]) for k in KEYS}
    after = {k: owner(k, ["op-a", "op-b", "op-c"]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "op-c" for k in moved)
    assert 850 < len(moved) < 1150


def test_lease_names_are_dns_names() -> None:
    assert lease_name("agentflow", "agentflow-7d9c-x2") == "agentflow-agentflow-7d9c-x2"
    odd = lease_name("agentflow", "Host_Name.example")
    assert odd.startswith("agentflow-host-name-example-") and len(odd) <= 63
    long = lease_name("agentflow", "x" * 80)
    assert len(long) <= 63 and long != lease_name("agentflow", "x" * 81)


def test_lease_body_and_renewal() -> None:
    body = lease_body("agentflow-system", "agentflow", "op-a", duration=10, now="2026-12-07T03:00:00.000000Z")
    assert body["metadata"] == {"name": "agentflow-op-a", "namespace": "agentflow-system",
                                "labels": {"agentflow.dev/shard-group": "agentflow",
                                           "app.kubernetes.io/managed-by": "agentflow"}}
    assert body["spec"]["holderIdentity"] == "op-a" and body["spec"]["leaseDurationSeconds"] == 10
    assert renew_patch("op-a", duration=10, now="T")["spec"] == {"holderIdentity": "op-a",
                                                               "leaseDurationSeconds": 10, "renewTime": "T"}


def test_the_renew_interval_must_leave_room_for_two_renewals() -> None:
    with pytest.raises(ValueError, match="under half the lease duration"):
        Membership("op-a", duration=10, renew=5)
    with pytest.raises(ValueError, match="above 0"):
        Membership("op-a", duration=10, renew=0)


def rounds(m: Membership, start: float, end: float, leases: list[dict[str, object]], step: float = 2.0) -> None:
    t = start
    while t <= end:
        m.observe(leases, t)
        m.completed(t)
        t += step


def test_a_newcomer_acts_only_after_one_lease_duration() -> None:
    m = Membership("op-a", duration=10, renew=2)
    assert m.view(0.0) == View(False, ())
    rounds(m, 0.0, 8.0, [lease("op-a", "r0")])
    assert not m.active(8.0) and m.live(8.0) == ()
    rounds(m, 10.0, 10.0, [lease("op-a", "r5")])
    assert m.active(10.0) and m.live(10.0) == ("op-a",)
    assert m.view(10.0).owns("op-a", KEYS[0])


def test_a_member_that_cannot_renew_stops_before_the_others_drop_it() -> None:
    m = Membership("op-a", duration=10, renew=2)
    rounds(m, 0.0, 20.0, [lease("op-a", "r")])
    # last complete round at 20: still active up to 20 + 10 - 2 = 28, never at 28
    assert m.active(27.9) and not m.active(28.0)
    assert m.live(28.0) == ()
    # an observer that saw op-a's last renewal at 20 (after the round started) counts it until 30 > 28
    other = Membership("op-b", duration=10, renew=2)
    other.observe([lease("op-a", "r-last")], 20.1)
    assert "op-a" in other.live(29.9) and "op-a" not in other.live(30.1)


def test_after_a_gap_longer_than_the_lease_a_member_is_a_newcomer_again() -> None:
    m = Membership("op-a", duration=10, renew=2)
    rounds(m, 0.0, 20.0, [lease("op-a", "r")])
    m.observe([lease("op-a", "r2")], 31.0)
    m.completed(31.0)  # 11 s since the last round: the others dropped it meanwhile
    rounds(m, 33.0, 39.0, [lease("op-a", "r3")])
    assert not m.active(31.0) and not m.active(40.9) and m.active(41.0)


def test_liveness_counts_from_the_observers_clock_and_changes_of_renew_time() -> None:
    m = Membership("op-a", duration=10, renew=2)
    rounds(m, 0.0, 4.0, [lease("op-a", "a0"), lease("op-b", "b0")])
    rounds(m, 6.0, 10.0, [lease("op-a", "a1"), lease("op-b", "b1")])  # b1 first seen at 6
    assert m.live(10.0) == ("op-a", "op-b")
    # op-b's renewTime stays the same (it died): dropped 10 s after it was first seen with that value
    rounds(m, 12.0, 14.0, [lease("op-a", "a2"), lease("op-b", "b1")])
    assert m.live(15.9) == ("op-a", "op-b") and m.live(16.0) == ("op-a",)
    # op-b renews again: live from this observation on
    rounds(m, 16.0, 16.0, [lease("op-a", "a3"), lease("op-b", "b2")])
    assert m.live(16.0) == ("op-a", "op-b")
    # a Lease deleted (a graceful stop) is gone at once
    rounds(m, 18.0, 18.0, [lease("op-a", "a4")])
    assert m.live(18.0) == ("op-a",)


def test_leases_without_holder_or_time_count_for_nobody_and_their_own_duration_is_used() -> None:
    m = Membership("op-a", duration=10, renew=2)
    m.observe([{"spec": {"renewTime": "x"}}, {"spec": {"holderIdentity": "op-c"}},
               lease("op-d", "d1", duration=30)], 0.0)
    assert m.live(20.0) == ("op-d",) and m.live(30.0) == ()


def test_a_leaver_acts_on_nothing_at_once() -> None:
    m = Membership("op-a", duration=10, renew=2)
    rounds(m, 0.0, 12.0, [lease("op-a", "r")])
    assert m.active(12.0)
    m.leave()
    m.completed(13.0)
    assert not m.active(13.0) and m.live(13.0) == ()


def test_no_key_is_owned_by_two_replicas_across_a_join() -> None:
    """op-a alone, op-b joins at t=100: at every instant each key has at most one replica acting on it."""
    a, b = Membership("op-a", duration=10, renew=2), Membership("op-b", duration=10, renew=2)
    leases = {"op-a": lease("op-a", "a0")}
    keys = KEYS[:300]
    t, tick = 0.0, 0
    while t < 140.0:
        tick += 1
        leases["op-a"] = lease("op-a", f"a{tick}")
        a.observe(list(leases.values()), t)  # op-a's round at t
        a.completed(t)
        if t >= 100.0:
            leases["op-b"] = lease("op-b", f"b{tick}")
            b.observe(list(leases.values()), t + 1.0)  # op-b's rounds fall between op-a's
            b.completed(t + 1.0)
        for now in (t + 0.5, t + 1.5):
            va, vb = a.view(now), b.view(now)
            both = [k for k in keys if va.owns("op-a", k) and vb.owns("op-b", k)]
            assert not both, (now, both[:3])
        t += 2.0
    assert a.view(139.0).members == ("op-a", "op-b") == b.view(139.0).members
    owned = collections.Counter("a" if a.view(139.0).owns("op-a", k) else "b" for k in keys)
    assert owned["a"] + owned["b"] == len(keys) and owned["b"] > 100
