"""PostgresLedger against a real PostgreSQL: four replicas (separate pools) racing for one hard budget,
soft budgets, idempotent settle/release, expiry, two lines all or nothing, windows, the call log."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agentflow.storage import LEDGER_SCHEMA_VERSION, PostgresLedger, StorageError
from agentflow.storage.ledger import BudgetExceeded, BudgetLine, LlmCall, UnknownReservation, Usage

pytestmark = pytest.mark.integration

MARCH = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
APRIL = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)


def line(name: str = "b", *, usd: float | None = 1.0, tokens: int | None = None, hard: bool = True,
         start: dt.datetime = MARCH, uid: str | None = None, namespace: str = "team-a") -> BudgetLine:
    return BudgetLine(uid or f"uid-{uuid.uuid4().hex}", namespace, name, start, None, usd, tokens, hard)


def call(**kw: object) -> LlmCall:
    base = LlmCall(namespace="team-a", workflow="wf", run_uid="run-1", node="n", attempt=1, step="s", agent="a",
                   prompt="p", model_requested="gpt-4o", model_used="gpt-4o-mini", input_tokens=10,
                   output_tokens=5, cost_usd=0.1, latency_ms=12.5, cached=False, status="ok",
                   routing={"rule": "cheap-first", "candidates": ["gpt-4o-mini", "gpt-4o"], "score": 0.5})
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def ledger(postgres_dsn: str) -> AsyncIterator[PostgresLedger]:
    ledger = await PostgresLedger.connect(postgres_dsn, min_size=1, max_size=4)
    try:
        await ledger.migrate()
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
async def replicas(postgres_dsn: str, ledger: PostgresLedger) -> AsyncIterator[list[PostgresLedger]]:
    """Four ledgers with pools of their own, like four gateway replicas."""
    others = [await PostgresLedger.connect(postgres_dsn, min_size=1, max_size=5) for _ in range(4)]
    try:
        yield others
    finally:
        for other in others:
            await other.close()


async def test_migrate_is_idempotent_and_concurrent_safe(ledger: PostgresLedger, postgres_dsn: str) -> None:
    await asyncio.gather(*(ledger.migrate() for _ in range(4)))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM agentflow_ledger_schema_version")]
    finally:
        await conn.close()
    assert versions == list(range(1, LEDGER_SCHEMA_VERSION + 1))


async def test_four_replicas_never_overspend_a_hard_budget(replicas: list[PostgresLedger]) -> None:
    # $1.00 and 260 reservations of $0.007: exactly 142 fit ($0.994), whatever the interleaving.
    budget = line(usd=1.0)
    asked, n = 0.007, 260

    async def one(i: int) -> bool:
        ledger = replicas[i % len(replicas)]
        try:
            r = await ledger.reserve([budget], asked, 3, reference=f"call-{i}")
        except BudgetExceeded:
            return False
        await asyncio.sleep(0.001 * (i % 5))
        await ledger.settle(r.id, asked, 3, call(run_uid=f"run-{budget.budget_uid}", node=f"n{i}"))
        return True

    ok = await asyncio.gather(*(one(i) for i in range(n)))
    assert sum(ok) == 142
    usage = await replicas[0].usage(budget)
    assert usage == Usage(spent_usd=pytest.approx(0.994), spent_tokens=3 * 142)  # type: ignore[arg-type]
    assert usage.spent_usd <= 1.0 and usage.reserved_usd == 0.0
    logged = await replicas[1].calls(namespace="team-a", limit=10_000)
    assert sum(1 for c in logged if c.run_uid == f"run-{budget.budget_uid}") == 142


async def test_concurrent_reservations_hold_without_settling(replicas: list[PostgresLedger]) -> None:
    # Held (not settled) reservations count too: 200 concurrent holds of 1 token against 150 tokens.
    budget = line(usd=None, tokens=150)

    async def one(i: int) -> str | None:
        try:
            return (await replicas[i % 4].reserve([budget], 0.0, 1, reference=str(i))).id
        except BudgetExceeded:
            return None

    ids = await asyncio.gather(*(one(i) for i in range(200)))
    held = [i for i in ids if i is not None]
    assert len(held) == 150
    assert await replicas[0].usage(budget) == Usage(reserved_tokens=150)
    await asyncio.gather(*(replicas[k % 4].release(rid) for k, rid in enumerate(held)))
    assert await replicas[2].usage(budget) == Usage()


async def test_soft_budget_lets_everything_through_with_warnings(replicas: list[PostgresLedger]) -> None:
    budget = line(usd=0.1, hard=False)
    results = await asyncio.gather(*(replicas[i % 4].reserve([budget], 0.01, 1, reference=str(i))
                                     for i in range(30)))
    assert len(results) == 30
    warned = [r for r in results if r.warnings]
    assert len(warned) == 20  # the 11th and later go past $0.10, in whatever order they came
    assert "(soft) is over its limit" in warned[0].warnings[0]
    await asyncio.gather(*(replicas[0].settle(r.id, 0.01, 1) for r in results))
    assert await replicas[0].usage(budget) == Usage(spent_usd=0.3, spent_tokens=30)


async def test_settle_and_release_are_idempotent(ledger: PostgresLedger, replicas: list[PostgresLedger]) -> None:
    budget = line(usd=1.0)
    r = await ledger.reserve([budget], 0.5, 10, reference="a")
    c = call(run_uid=f"run-{budget.budget_uid}")
    await asyncio.gather(*(replicas[i].settle(r.id, 0.3, 7, c) for i in range(4)))  # four at once
    await ledger.settle(r.id, 0.3, 7, c)
    await ledger.release(r.id)
    assert await ledger.usage(budget) == Usage(spent_usd=0.3, spent_tokens=7)
    assert len([x for x in await ledger.calls(limit=10_000) if x.run_uid == c.run_uid]) == 1
    r2 = await ledger.reserve([budget], 0.5, 0, reference="b")
    await asyncio.gather(*(replicas[i].release(r2.id) for i in range(4)))
    await ledger.settle(r2.id, 0.5, 0)  # released stays released
    assert await ledger.usage(budget) == Usage(spent_usd=0.3, spent_tokens=7)
    with pytest.raises(UnknownReservation, match="'never-issued' was never issued"):
        await ledger.settle("never-issued", 0.0, 0)
    with pytest.raises(UnknownReservation):
        await ledger.release("never-issued")


async def test_expired_reservations_are_reclaimed(ledger: PostgresLedger, replicas: list[PostgresLedger]) -> None:
    budget = line(usd=1.0)
    crashed = await replicas[0].reserve([budget], 0.9, 0, reference="crashed gateway", ttl_seconds=0.3)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([budget], 0.2, 0, reference="too early")
    await asyncio.sleep(0.5)
    # lazily: the refused reservation reclaims the expired hold on its line and tries again
    r = await replicas[1].reserve([budget], 0.2, 0, reference="after expiry", ttl_seconds=0.3)
    assert await ledger.usage(budget) == Usage(reserved_usd=0.2)
    await asyncio.sleep(0.5)
    assert await ledger.reclaim_expired() >= 1  # other tests' expired holds may be reclaimed too
    assert await ledger.usage(budget) == Usage()
    await ledger.settle(crashed.id, 0.4, 2)  # late settle: the call happened, its cost counts once
    await ledger.settle(r.id, 0.1, 1)
    assert await ledger.usage(budget) == Usage(spent_usd=0.5, spent_tokens=3)


async def test_two_lines_are_all_or_nothing(replicas: list[PostgresLedger]) -> None:
    namespace_line = line("team-a", usd=100.0)
    label_line = line("gold-agents", usd=0.05)
    results = await asyncio.gather(*(
        _try(replicas[i % 4], [namespace_line, label_line] if i % 2 else [label_line, namespace_line])
        for i in range(40)
    ))
    assert sum(results) == 5
    assert await replicas[0].usage(label_line) == Usage(reserved_usd=0.05)
    assert await replicas[0].usage(namespace_line) == Usage(reserved_usd=0.05)  # nothing for the refused ones


async def _try(ledger: PostgresLedger, lines: list[BudgetLine]) -> bool:
    try:
        await ledger.reserve(lines, 0.01, 0, reference="two lines")
    except BudgetExceeded:
        return False
    return True


async def test_a_new_window_starts_empty(ledger: PostgresLedger) -> None:
    uid = f"uid-{uuid.uuid4().hex}"
    march, april = line(usd=1.0, uid=uid), line(usd=1.0, uid=uid, start=APRIL)
    r = await ledger.reserve([march], 1.0, 0, reference="a")
    await ledger.settle(r.id, 1.0, 0)
    with pytest.raises(BudgetExceeded, match="exhausted for the window starting 2024-03-01"):
        await ledger.reserve([march], 0.01, 0, reference="b")
    assert await ledger.usage(april) == Usage()
    await ledger.reserve([april], 1.0, 0, reference="c")
    assert await ledger.usage(march) == Usage(spent_usd=1.0)


async def test_call_log_round_trips_every_field(ledger: PostgresLedger) -> None:
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    budget = line(usd=5.0, namespace=ns)
    r = await ledger.reserve([budget], 0.2, 20, reference="a")
    at = dt.datetime(2024, 3, 2, 10, tzinfo=dt.UTC)
    settled = call(namespace=ns, workflow="wf-1", at=at, cached=True, latency_ms=99.25)
    await ledger.settle(r.id, 0.1, 15, settled)
    await ledger.record(call(namespace=ns, workflow="wf-2", status="BudgetExceeded", cost_usd=0.0,
                             at=at + dt.timedelta(minutes=1), budgets=(f"{ns}/b",), routing={}))
    await ledger.record(call(namespace=ns, workflow="wf-1", at=None))  # stamped by the database
    got = await ledger.calls(namespace=ns)
    assert [c.workflow for c in got] == ["wf-1", "wf-2", "wf-1"]
    assert got[0] == dataclasses.replace(settled, budgets=(f"{ns}/b",))  # filled in from the reservation
    assert got[1].status == "BudgetExceeded" and got[1].routing == {}
    assert got[2].at is not None and got[2].at > at
    assert [c.workflow for c in await ledger.calls(namespace=ns, workflow="wf-2")] == ["wf-2"]
    assert len(await ledger.calls(namespace=ns, since=at + dt.timedelta(seconds=30))) == 2
    assert [c.workflow for c in await ledger.calls(namespace=ns, limit=2)] == ["wf-2", "wf-1"]


async def test_without_migrate_the_error_says_what_to_do(postgres_dsn: str) -> None:
    name = f"empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
        async with await PostgresLedger.connect(dsn) as empty:
            with pytest.raises(StorageError, match=r"call PostgresLedger.migrate\(\)"):
                await empty.usage(line())
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
