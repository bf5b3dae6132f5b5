"""Retention against a real PostgreSQL: a deleted Workflow's rows collected in one transaction (the audit chain still
verifies, a Budget's spend unchanged, other runs untouched), the sweep collecting the runs whose Workflow is gone and
nothing else (namespaces not watched, namespaces not known, a listing that fails)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow.audit.records import AuditEvent
from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.k8s.kube import KubeError
from agentflow.services.retention import RunRetention, SweepAborted
from agentflow.storage.attempts import AttemptPod
from agentflow.storage.database import Database
from agentflow.storage.ledger import BudgetLine, LlmCall
from agentflow.storage.outbox import EventSource
from agentflow.testing import FakeKube

pytestmark = pytest.mark.integration

E = EventType
MARCH = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
async def db(own_dsn: str) -> AsyncIterator[Database]:
    """A database of its own, every schema migrated, events on: the sweep judges every run in it."""
    db = await Database.connect(own_dsn, max_size=4, outbox=True)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()


BUDGET = BudgetLine("budget-uid", "team-a", "monthly", MARCH, None, 100.0, None, True)


def workflow(uid: str, namespace: str = "team-a", name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name or f"wf-{uid[:8]}", "namespace": namespace, "uid": uid},
            "spec": {"steps": [{"name": "a", "kind": "approval"}]}}


async def a_run(db: Database, namespace: str | None = "team-a", *, held: bool = False) -> str:
    """A run as the operator leaves it: journal (with its outbox and namespace when ``namespace``), an attempt
    with its pod, a result, two model calls settled on the Budget (one more held with ``held``), audit records."""
    uid = str(uuid.uuid4())
    journal = Journal()
    records = journal.extend([Event(E.run_started, None, {"workflow": "wf"}, 1.0),
                              Event(E.step_scheduled, "a", {"attempt": 1, "inputs": {"text": "x" * 500}}, 2.0),
                              Event(E.step_succeeded, "a", {"attempt": 1, "output": "y" * 500}, 3.0)])
    source = EventSource(namespace, f"wf-{uid[:8]}", "Succeeded") if namespace is not None else None
    await db.store.append(uid, records, source)
    await db.store.put_attempt(uid, "a", 1, {"request": {"node": "a"}})
    await db.store.put_result(uid, "a", 1, {"output": "y" * 500})
    for i in range(2):
        reservation = await db.ledger.reserve([BUDGET], 0.5, 10, reference=f"{uid}/a/{i}")
        await db.ledger.settle(reservation.id, 0.25, 8, LlmCall(
            namespace="team-a", workflow=f"wf-{uid[:8]}", run_uid=uid, node="a", attempt=i, step="a", agent="ag",
            prompt="p", model_requested="m", model_used="m", input_tokens=5, output_tokens=3, cost_usd=0.25,
            latency_ms=1.0, cached=False, status="ok", routing={}))
    if held:
        await db.ledger.reserve([BUDGET], 0.5, 10, reference=f"{uid}/a/9")
    await db.audit.append([AuditEvent(kind="model_call", actor="gateway", namespace="team-a",
                                      subject=f"team-a/wf/a#{i}", decision="allow", at="2026-03-02T00:00:00Z",
                                      data={"run": uid}) for i in range(2)])
    return uid


async def rows(db: Database, uid: str) -> dict[str, int]:
    async with db.pool.acquire() as conn:
        counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE run_uid = $1", uid)
                  for table in ("agentflow_journal", "agentflow_attempts", "agentflow_step_results",
                                "agentflow_event_runs", "agentflow_runs", "agentflow_llm_calls")}
        counts["reservations"] = await conn.fetchval(
            "SELECT count(*) FROM agentflow_budget_reservations WHERE reference LIKE $1 || '/%'", uid)
        counts["audit"] = await conn.fetchval("SELECT count(*) FROM agentflow_audit WHERE data->>'run' = $1", uid)
    return counts


async def test_a_deleted_run_is_collected_and_the_record_kept(db: Database) -> None:
    gone, kept = await a_run(db, held=True), await a_run(db)
    spent = await db.ledger.usage(BUDGET)
    before = await rows(db, kept)
    assert before == {"agentflow_journal": 3, "agentflow_attempts": 1, "agentflow_step_results": 1,
                      "agentflow_event_runs": 1, "agentflow_runs": 1, "agentflow_llm_calls": 2, "reservations": 2,
                      "audit": 2}

    collected = await db.store.delete_run(gone)

    assert collected.rows == {"agentflow_journal": 3, "agentflow_attempts": 1, "agentflow_step_results": 1,
                              "agentflow_event_runs": 1, "agentflow_runs": 1, "agentflow_llm_calls": 2,
                              "agentflow_budget_reservations": 2, "agentflow_evaluations": 0,
                              "agentflow_evaluation_cases": 0,  # not an evaluation run: none of those
                              "agentflow_notifications": 0}  # and no approval that notified
    assert await rows(db, gone) == {"agentflow_journal": 0, "agentflow_attempts": 0, "agentflow_step_results": 0,
                                    "agentflow_event_runs": 0, "agentflow_runs": 0, "agentflow_llm_calls": 0,
                                    "reservations": 1,  # the held one still holds money until settled or expired
                                    "audit": 2}
    assert await rows(db, kept) == before
    assert await db.ledger.usage(BUDGET) == spent  # spend is the window's counter, not a sum over calls
    report = await db.audit.verify()
    assert report.ok and report.checked == 4
    assert (await db.store.delete_run(gone)).total == 0  # twice is fine


async def test_the_first_record_names_the_runs_namespace(db: Database) -> None:
    uid = await a_run(db, "team-b")
    assert [(r.run_uid, r.namespace) for r in await db.store.runs()] == [(uid, "team-b")]


async def test_the_sweep_collects_runs_whose_workflow_is_gone_and_nothing_else(db: Database) -> None:
    alive, gone, elsewhere, unknown = (await a_run(db, "team-a"), await a_run(db, "team-a"),
                                       await a_run(db, "team-b"), await a_run(db, None))
    kube = FakeKube(workflow(alive))
    forgotten: list[str] = []

    watching_a = RunRetention(kube, db.store, namespaces=["team-a"], forget=forgotten.append)
    assert sorted(await watching_a.orphans()) == [gone]
    assert await RunRetention(kube, db.store, namespaces=["team-*, !team-b"]).orphans() == [gone]  # kopf's globs
    await watching_a.sweep()
    assert forgotten == [gone]
    assert (await rows(db, gone))["agentflow_journal"] == 0
    for uid in (alive, elsewhere, unknown):  # not watched, namespace not known: kept
        assert (await rows(db, uid))["agentflow_journal"] == 3

    everywhere = RunRetention(kube, db.store)
    collected = await everywhere.sweep()
    assert collected.rows["agentflow_journal"] == 6
    assert [r.run_uid for r in await db.store.runs()] == [alive]
    assert (await db.audit.verify()).ok


async def test_a_listing_that_fails_collects_nothing(db: Database) -> None:
    gone = await a_run(db)
    kube = FakeKube()
    kube.list_error = KubeError("list workflows: 503 Service Unavailable")
    for retention in (RunRetention(kube, db.store), RunRetention(kube, db.store, namespaces=["team-a"])):
        with pytest.raises(SweepAborted, match="nothing is collected on a partial view"):
            await retention.sweep()
    assert (await rows(db, gone))["agentflow_journal"] == 3


async def test_a_step_pod_posting_after_the_delete_leaves_an_orphan_the_sweep_collects(db: Database) -> None:
    uid = await a_run(db)
    await db.store.delete_run(uid)
    await db.store.put_result(uid, "late", 1, {"output": 1})  # a result posted after the collection
    assert [r.run_uid for r in await db.store.runs()] == [uid]
    await RunRetention(FakeKube(), db.store).sweep()
    assert await db.store.runs() == []


async def test_runs_older_than_the_runs_table_get_their_namespace_from_their_pods(db: Database) -> None:
    uid = str(uuid.uuid4())
    await db.store.append(uid, Journal().extend([Event(E.run_started, None, {}, 1.0)]))  # no source: not named
    await db.store.put_attempt(uid, "a", 1, {"x": 1}, pod=AttemptPod("team-c", "wf", "wf-a-1"))
    async with db.pool.acquire() as conn:  # as a database migrated before version 5 was
        await conn.execute("DELETE FROM agentflow_runs")
        await conn.execute("DELETE FROM agentflow_schema_version WHERE version >= 5")
    await db.migrate()
    async with db.pool.acquire() as conn:
        assert await conn.fetch("SELECT namespace, workflow FROM agentflow_runs WHERE run_uid = $1", uid) == [
            ("team-c", "wf")]
