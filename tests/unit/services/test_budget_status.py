"""Budget status: the pure builder (input -> expected status and Events) and the sync loop against a fake
API server that honours resourceVersion preconditions (two replicas emit each Event once)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from agentflow import testing
from agentflow.cost import line_for
from agentflow.models.budget import Budget
from agentflow.services.budgets import BudgetStatusSync, budget_status, parse_budget
from agentflow.services.metrics import Metrics
from agentflow.storage.ledger import Usage
from agentflow.storage.memory_ledger import MemoryLedger

NOW = dt.datetime(2024, 3, 15, 12, 0, 0, tzinfo=dt.UTC)
T = "2024-03-15T12:00:00Z"


def body(spec: Mapping[str, Any] | None = None, status: Mapping[str, Any] | None = None,
         **meta: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "Budget",
        "metadata": {"name": "team", "namespace": "ns-a", "uid": "uid-1", "generation": 2, "resourceVersion": "7",
                     **meta},
        "spec": dict(spec or {"limits": {"usd": 10.0, "tokens": 1000}, "alertThresholds": [0.5, 0.8]}),
    }
    if status is not None:
        b["status"] = dict(status)
    return b


def cond(type_: str, status: str, reason: str, message: str = "", since: str = T) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": 2}


def test_first_status_of_a_fresh_budget() -> None:
    update = budget_status(body(), Usage(), NOW)
    assert update.changed and update.events == ()
    assert update.status == {
        "spentUsd": 0.0, "spentTokens": 0, "reservedUsd": 0.0, "reservedTokens": 0,
        "windowStart": "2024-03-01T00:00:00Z", "windowEnd": "2024-04-01T00:00:00Z",
        "limitUsd": 10.0, "remainingUsd": 10.0, "limitTokens": 1000, "remainingTokens": 1000,
        "usedFraction": 0.0, "thresholdsReached": [], "observedGeneration": 2,
        "conditions": [
            cond("Ready", "True", "Active",
                 "$0.0000 of $10.00 and 0 of 1000 tokens spent in the window ending 2024-04-01T00:00:00Z"),
            cond("Exhausted", "False", "WithinLimits"),
            cond("ThresholdReached", "False", "BelowThresholds"),
        ],
    }
    # the same inputs again: nothing to patch
    again = budget_status(body(status=update.status), Usage(), NOW + dt.timedelta(seconds=5))
    assert not again.changed and again.events == () and again.status == update.status


def test_crossing_thresholds_emits_each_once_and_keeps_transition_times() -> None:
    first = budget_status(body(), Usage(spent_usd=1.0, reserved_usd=0.5, spent_tokens=10), NOW).status
    later = NOW + dt.timedelta(minutes=1)
    update = budget_status(body(status=first), Usage(spent_usd=8.5, spent_tokens=20, reserved_tokens=5), later)
    s = update.status
    assert (s["spentUsd"], s["reservedUsd"], s["remainingUsd"], s["remainingTokens"]) == (8.5, 0.0, 1.5, 975)
    assert s["usedFraction"] == 0.85 and s["thresholdsReached"] == [0.5, 0.8]
    assert [(e.type, e.reason) for e in update.events] == [("Warning", "ThresholdReached")] * 2
    assert update.events[1].message == ("Budget ns-a/team reached 80% of its limit in the window ending "
                                        "2024-04-01T00:00:00Z: $8.50 of $10.00 and 20 of 1000 tokens spent")
    conditions = {c["type"]: c for c in s["conditions"]}
    assert conditions["ThresholdReached"]["status"] == "True"
    assert conditions["ThresholdReached"]["lastTransitionTime"] == "2024-03-15T12:01:00Z"
    assert conditions["Exhausted"]["lastTransitionTime"] == T  # unchanged status keeps its time
    again = budget_status(body(status=s), Usage(spent_usd=9.0, spent_tokens=20), later)
    assert again.events == () and again.status["thresholdsReached"] == [0.5, 0.8]


def test_exhausted_hard_and_soft() -> None:
    update = budget_status(body(), Usage(spent_usd=10.0, reserved_usd=0.3, spent_tokens=100), NOW)
    assert update.status["remainingUsd"] == 0.0  # never below zero
    reasons = [e.reason for e in update.events]
    assert reasons == ["ThresholdReached", "ThresholdReached", "BudgetExhausted"]
    assert update.events[2].message.endswith(
        "$10.00 of $10.00 and 100 of 1000 tokens spent; model calls in its scope are refused until "
        "2024-04-01T00:00:00Z")
    exhausted = next(c for c in update.status["conditions"] if c["type"] == "Exhausted")
    assert (exhausted["status"], exhausted["reason"]) == ("True", "LimitReached")
    # still exhausted next round: no second Event
    assert budget_status(body(status=update.status), Usage(spent_usd=10.5), NOW).events == ()
    soft = body({"limits": {"tokens": 100}, "enforcement": "soft", "period": "total", "alertThresholds": [1.0]})
    update = budget_status(soft, Usage(spent_tokens=150), NOW)
    assert "windowEnd" not in update.status and update.status["windowStart"] == "1970-01-01T00:00:00Z"
    assert "limitUsd" not in update.status and "remainingUsd" not in update.status
    assert [e.reason for e in update.events] == ["ThresholdReached", "BudgetExhausted"]
    assert update.events[1].message == ("Budget ns-a/team reached its limit in total: 150 of 100 tokens spent; "
                                        "calls continue (soft enforcement)")


def test_a_new_window_rolls_over_once_and_resets_thresholds() -> None:
    march = budget_status(body(), Usage(spent_usd=10.0, spent_tokens=5), NOW).status
    april = dt.datetime(2024, 4, 1, 0, 0, 3, tzinfo=dt.UTC)
    update = budget_status(body(status=march), Usage(), april)
    s = update.status
    assert (s["windowStart"], s["windowEnd"]) == ("2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z")
    assert s["thresholdsReached"] == [] and s["lastRollover"] == "2024-04-01T00:00:03Z"
    assert [(e.type, e.reason, e.message) for e in update.events] == [
        ("Normal", "PeriodRolledOver",
         "Budget ns-a/team: a new monthly window started at 2024-04-01T00:00:00Z; the last window spent $10.00"),
    ]
    assert {c["type"]: c["status"] for c in s["conditions"]}["Exhausted"] == "False"
    later = budget_status(body(status=s), Usage(spent_usd=6.0), april + dt.timedelta(hours=1))
    assert [e.reason for e in later.events] == ["ThresholdReached"]  # 50% again, in the new window
    assert later.status["lastRollover"] == "2024-04-01T00:00:03Z"
    # exhausted again in the new window: a new BudgetExhausted Event
    march_exhausted = budget_status(body(status=march), Usage(spent_usd=11.0), april)
    assert [e.reason for e in march_exhausted.events] == [
        "PeriodRolledOver", "ThresholdReached", "ThresholdReached", "BudgetExhausted"]


def test_invalid_budgets_are_not_ready_and_name_the_problem() -> None:
    bad = body({"limits": {}})
    update = budget_status(bad, Usage(), NOW)
    ready = update.status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "limits needs usd or tokens" in ready["message"]
    elsewhere = body({"limits": {"usd": 1}, "scope": {"namespace": "ns-b"}})
    ready = budget_status(elsewhere, Usage(), NOW).status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidScope")
    assert "create the Budget in namespace 'ns-b'" in ready["message"]


# --------------------------------------------------------------------------- the sync loop


def FakeKube(*bodies: dict[str, Any]) -> testing.FakeKube:
    return testing.FakeKube(*bodies)


def objects(kube: testing.FakeKube) -> dict[tuple[str, str], dict[str, Any]]:
    """The Budgets kept by ``kube``, by (namespace, name), as stored (edits change them)."""
    return {(ns, name): o for (plural, ns, name), o in kube.resources.items() if plural == "budgets"}


def budget_of(b: Mapping[str, Any]) -> Budget:
    parsed = parse_budget(b)
    assert isinstance(parsed, Budget)
    return parsed


async def test_two_replicas_patch_and_emit_each_event_once() -> None:
    now = [NOW]
    kube = FakeKube(body(), body(name="other", uid="uid-2", spec={"limits": {"usd": 1.0}}))
    ledger = MemoryLedger(lambda: now[0])
    metrics = Metrics()
    replicas = [BudgetStatusSync(kube, ledger, metrics=metrics, clock=lambda: now[0]) for _ in range(2)]
    await asyncio.gather(*(r.sync_once() for r in replicas))
    assert len(kube.statuses) == 2 and kube.events == []
    line = line_for(budget_of(objects(kube)[("ns-a", "team")]), "ns-a", NOW)
    r = await ledger.reserve([line], 9.0, 10, reference="x")
    await ledger.settle(r.id, 9.0, 10)
    for _ in range(3):
        await asyncio.gather(*(r.sync_once() for r in replicas))
    assert [e["reason"] for e in kube.events] == ["ThresholdReached", "ThresholdReached"]
    assert kube.events[0]["involvedObject"] == {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Budget",
                                                "name": "team", "namespace": "ns-a", "uid": "uid-1"}
    status = objects(kube)[("ns-a", "team")]["status"]
    assert status["spentUsd"] == 9.0 and status["thresholdsReached"] == [0.5, 0.8]
    sample = metrics.registry.get_sample_value
    assert sample("agentflow_budget_spent_usd", {"namespace": "ns-a", "budget": "team"}) == 9.0
    assert sample("agentflow_budget_remaining_tokens", {"namespace": "ns-a", "budget": "team"}) == 990
    assert sample("agentflow_budget_remaining_usd", {"namespace": "ns-a", "budget": "other"}) == 1.0
    assert sample("agentflow_budget_remaining_tokens", {"namespace": "ns-a", "budget": "other"}) is None
    # the month ends: one PeriodRolledOver, though both replicas see it
    now[0] = dt.datetime(2024, 4, 1, 0, 0, 1, tzinfo=dt.UTC)
    patches = len(kube.statuses)
    await asyncio.gather(*(r.sync_once() for r in replicas))
    await asyncio.gather(*(r.sync_once() for r in replicas))
    assert [e["reason"] for e in kube.events].count("PeriodRolledOver") == 2  # one per Budget
    assert len(kube.statuses) == patches + 2
    assert objects(kube)[("ns-a", "team")]["status"]["spentUsd"] == 0.0
    # a deleted Budget's gauges go
    del kube.resources[("budgets", "ns-a", "other")]
    await replicas[0].sync_once()
    assert sample("agentflow_budget_remaining_usd", {"namespace": "ns-a", "budget": "other"}) is None


async def test_run_loop_syncs_when_poked_and_stops() -> None:
    kube = FakeKube(body())
    sync = BudgetStatusSync(kube, MemoryLedger(), interval=3600, clock=lambda: NOW)
    stopped = asyncio.Event()
    task = asyncio.create_task(sync.run(stopped))
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(kube.statuses) == 1
    objects(kube)[("ns-a", "team")]["spec"]["limits"]["usd"] = 20.0
    sync.poke()
    for _ in range(50):
        await asyncio.sleep(0)
    assert objects(kube)[("ns-a", "team")]["status"]["limitUsd"] == 20.0
    stopped.set()
    await asyncio.wait_for(task, 1.0)


@pytest.mark.parametrize("namespaces", [["ns-a"], ["ns-b"]])
async def test_listing_only_the_watched_namespaces(namespaces: list[str]) -> None:
    kube = FakeKube(body())
    sync = BudgetStatusSync(kube, MemoryLedger(), namespaces=namespaces, clock=lambda: NOW)
    assert await sync.sync_once() == (1 if namespaces == ["ns-a"] else 0)


async def test_watched_namespaces_given_by_name_are_listed_one_by_one() -> None:
    """Plain names need only namespaced RBAC: the loop never lists Budgets cluster-wide then."""
    kube = FakeKube(body(), body(name="elsewhere", uid="uid-9", namespace="ns-z"))
    listed: list[str] = []
    real = kube.list_resources

    async def spy(plural: str, namespace: str) -> list[dict[str, Any]]:
        listed.append(namespace)
        return await real(plural, namespace)

    async def forbidden(plural: str) -> list[dict[str, Any]]:
        raise AssertionError("listed cluster-wide")

    kube.list_resources = spy  # type: ignore[method-assign]
    kube.list_resources_all = forbidden  # type: ignore[method-assign]
    sync = BudgetStatusSync(kube, MemoryLedger(), namespaces=["ns-a"], clock=lambda: NOW)
    await sync.sync_once()
    assert listed == ["ns-a"] and set(objects(kube)[("ns-a", "team")]["status"]) >= {"spentUsd"}
    assert "status" not in objects(kube)[("ns-z", "elsewhere")]
