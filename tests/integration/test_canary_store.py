"""A PromptRollout's evidence in PostgreSQL: PostgresStore.family_runs finds a namespace's runs of a prompt family
from their journals (so a restarted operator counts the same runs), and RolloutSync decides on them."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from agentflow.engine.journal import Journal
from agentflow.services.canary import RolloutSync
from agentflow.storage import PostgresStore
from agentflow.storage.attempts import AttemptPod
from agentflow.testing import FakeKube, MemoryAuditSink
from agentflow.testing import prompt_run_events as run_events

pytestmark = pytest.mark.integration

TYPES = ("RunStarted", "StepScheduled", "StepSucceeded", "StepFailed", "CostRecorded", "RunFinished")


def version(name: str, namespace: str, family: str) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptVersion",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"prompt": family, "version": name[-1], "messages": [{"role": "user", "content": "hi"}],
                     "evaluations": {"agentRef": {"name": "a"}, "cases": [{"name": "c"}]}},
            "status": {"evaluation": {"phase": "Passed", "passRate": 1.0}}}


def rollout(namespace: str, family: str) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptRollout",
            "metadata": {"name": "t-rollout", "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": {"prompt": family, "stable": "t-v1", "candidate": "t-v2",
                     "steps": [{"weight": 20, "minRuns": 3}, {"weight": 50, "minRuns": 3}],
                     "onlineGates": [{"signal": "schemaFailureRate"}], "minSamples": 10}}


async def add_run(store: PostgresStore, namespace: str, family: str, version: str, at: float,
                  schema_failure: bool = False, nul: bool = False) -> str:
    uid = f"run-{uuid.uuid4()}"
    journal = Journal()
    events = run_events(version, at=at, family=family, schema_failure=schema_failure)
    if nul:  # an input PostgreSQL's JSON operators cannot read back as text
        events[0] = events[0]._replace(data={**events[0].data, "inputs": {"ticket": "a\u0000b"}})
    await store.append(uid, [journal.append(e) for e in events])
    await store.put_attempt(uid, "a", 1, {"request": {}}, pod=AttemptPod(namespace, "w", f"{uid}-a", uid, "a", 1))
    return uid


async def test_family_runs_reads_a_namespaces_runs_of_a_family(store: PostgresStore) -> None:
    ns, family = f"ns-{uuid.uuid4().hex[:8]}", f"fam-{uuid.uuid4().hex[:8]}"
    old = await add_run(store, ns, family, "v1", at=100.0)
    first = await add_run(store, ns, family, "v1", at=200.0)
    second = await add_run(store, ns, family, "v2", at=300.0, schema_failure=True)
    await add_run(store, "elsewhere", family, "v1", at=250.0)  # another namespace
    await add_run(store, ns, "other-family", "v1", at=250.0, nul=True)
    await add_run(store, "elsewhere", family, "v1", at=260.0, nul=True)
    got = await store.family_runs(ns, family, since=150.0, types=TYPES, limit=100)
    assert [uid for uid, _ in got] == [first, second]  # oldest first, from ``since``
    with_nul = await add_run(store, ns, family, "v1", at=400.0, nul=True)
    got = await store.family_runs(ns, family, since=150.0, types=TYPES, limit=100)
    assert [uid for uid, _ in got] == [first, second, with_nul]
    assert got[2][1][0].event.data["inputs"] == {"ticket": "a\u0000b"}
    records = got[1][1]
    assert [r.event.type.value for r in records] == ["RunStarted", "StepScheduled", "CostRecorded",
                                                     "StepScheduled", "CostRecorded", "StepFailed", "RunFinished"]
    assert [uid for uid, _ in await store.family_runs(ns, family, since=0.0, types=TYPES, limit=1)] == [with_nul]
    assert old not in {uid for uid, _ in await store.family_runs(ns, family, since=150.0, types=TYPES, limit=9)}
    only_start = await store.family_runs(ns, family, since=0.0, types=(), limit=9)
    assert all(len(rs) == 1 and rs[0].seq == 0 for _, rs in only_start)


async def test_a_rollout_decides_on_the_journal_and_a_new_sync_counts_the_same(store: PostgresStore) -> None:
    ns, family = f"ns-{uuid.uuid4().hex[:8]}", f"fam-{uuid.uuid4().hex[:8]}"
    kube = FakeKube(version("t-v1", ns, family), version("t-v2", ns, family), rollout(ns, family))
    now = [1_700_000_000.0]
    sync = RolloutSync(kube, store, audit=MemoryAuditSink(), clock=lambda: now[0])

    def body() -> dict[str, Any]:
        return copy.deepcopy(kube.resources[("promptrollouts", ns, "t-rollout")])

    assert (await sync.sync(body())).action == "Start"  # type: ignore[union-attr]
    for i in range(12):
        await add_run(store, ns, family, "t-v2", at=now[0] + 1 + i, schema_failure=i < 9)
        await add_run(store, ns, family, "t-v1", at=now[0] + 1 + i)
    now[0] += 60
    restarted = RolloutSync(kube, store, audit=MemoryAuditSink(), clock=lambda: now[0])  # nothing in memory
    decision = await restarted.sync(body())
    assert decision is not None and decision.action == "Rollback"
    gate = body()["status"]["gates"][0]
    assert (gate["candidateSamples"], gate["stableSamples"], gate["candidate"], gate["stable"]) == (12, 12, 0.75, 0.0)
