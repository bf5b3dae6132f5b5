"""MemoryLedger: reserve/settle/release with hard and soft lines, expiry on a virtual clock, the call log."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from agentflow.storage.ledger import BudgetExceeded, BudgetLine, LlmCall, UnknownReservation, Usage
from agentflow.storage.memory_ledger import MemoryLedger, money

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START + dt.timedelta(hours=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def line(name: str = "b", *, usd: float | None = 1.0, tokens: int | None = None, hard: bool = True,
         start: dt.datetime = START) -> BudgetLine:
    return BudgetLine(f"uid-{name}", "team-a", name, start, None, usd, tokens, hard)


def call(**kw: object) -> LlmCall:
    base = LlmCall(namespace="team-a", workflow="wf", run_uid="run-1", node="n", attempt=1, step="s", agent="a",
                   prompt="", model_requested="m", model_used="m", input_tokens=10, output_tokens=5, cost_usd=0.1,
                   latency_ms=12.5, cached=False, status="ok")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock) -> MemoryLedger:
    return MemoryLedger(clock)


async def test_hard_line_admits_exactly_what_fits(ledger: MemoryLedger) -> None:
    b = line(usd=1.0)
    held = [await ledger.reserve([b], 0.01, 0, reference=f"r{i}") for i in range(100)]  # $0.01 x 100 = $1 exactly
    assert await ledger.usage(b) == Usage(reserved_usd=1.0)
    with pytest.raises(BudgetExceeded) as info:
        await ledger.reserve([b], 0.01, 0, reference="one too many")
    assert "Budget team-a/b (hard) is exhausted" in str(info.value)
    assert "$0.000000 of $1.000000 left, $0.010000 asked" in str(info.value)
    assert info.value.usage == Usage(reserved_usd=1.0)
    for r in held[:50]:
        await ledger.settle(r.id, 0.005, 0)
    for r in held[50:]:
        await ledger.release(r.id)
    assert await ledger.usage(b) == Usage(spent_usd=0.25)


async def test_tokens_limit(ledger: MemoryLedger) -> None:
    b = line(usd=None, tokens=100)
    r = await ledger.reserve([b], 5.0, 60, reference="a")
    with pytest.raises(BudgetExceeded, match="40 of 100 tokens left, 41 asked"):
        await ledger.reserve([b], 0.0, 41, reference="b")
    await ledger.reserve([b], 0.0, 40, reference="c")
    await ledger.settle(r.id, 1.0, 30)
    assert await ledger.usage(b) == Usage(spent_usd=1.0, spent_tokens=30, reserved_tokens=40)


async def test_soft_line_lets_everything_through_with_a_warning(ledger: MemoryLedger) -> None:
    b = line(usd=0.05, hard=False)
    results = [await ledger.reserve([b], 0.02, 0, reference=str(i)) for i in range(4)]
    assert [bool(r.warnings) for r in results] == [False, False, True, True]
    assert "Budget team-a/b (soft) is over its limit" in results[2].warnings[0]
    assert "$0.060000 of $0.050000" in results[2].warnings[0]
    for r in results:
        await ledger.settle(r.id, 0.02, 1)
    assert await ledger.usage(b) == Usage(spent_usd=0.08, spent_tokens=4)


async def test_two_lines_all_or_nothing(ledger: MemoryLedger) -> None:
    ns, label = line("ns", usd=10.0), line("label", usd=0.5)
    await ledger.reserve([ns, label], 0.4, 0, reference="a")
    with pytest.raises(BudgetExceeded, match="team-a/label"):
        await ledger.reserve([label, ns], 0.2, 0, reference="b")
    assert await ledger.usage(ns) == Usage(reserved_usd=0.4)  # nothing taken from the line that had room
    r = await ledger.reserve([label, ns, ns], 0.1, 0, reference="c")  # one hold per line even if named twice
    assert [x.name for x in r.lines] == ["label", "ns"]  # by uid: the lock order
    assert await ledger.usage(ns) == Usage(reserved_usd=0.5)


async def test_settle_and_release_are_idempotent_and_ids_are_checked(ledger: MemoryLedger) -> None:
    b = line(usd=1.0)
    r = await ledger.reserve([b], 0.5, 10, reference="a")
    await ledger.settle(r.id, 0.3, 7, call(cost_usd=0.3))
    await ledger.settle(r.id, 0.3, 7, call(cost_usd=0.3))
    await ledger.release(r.id)
    assert await ledger.usage(b) == Usage(spent_usd=0.3, spent_tokens=7)
    assert len(await ledger.calls()) == 1
    r2 = await ledger.reserve([b], 0.5, 0, reference="b")
    await ledger.release(r2.id)
    await ledger.release(r2.id)
    await ledger.settle(r2.id, 0.5, 0)  # a released reservation stays released
    assert await ledger.usage(b) == Usage(spent_usd=0.3, spent_tokens=7)
    with pytest.raises(UnknownReservation, match="'nope' was never issued"):
        await ledger.settle("nope", 0.0, 0)
    with pytest.raises(UnknownReservation):
        await ledger.release("nope")


async def test_expired_holds_are_reclaimed_and_a_late_settle_still_charges(ledger: MemoryLedger, clock: Clock) -> None:
    b = line(usd=1.0)
    r = await ledger.reserve([b], 0.9, 0, reference="crashed gateway", ttl_seconds=30)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([b], 0.2, 0, reference="x")
    clock.advance(29)
    assert await ledger.reclaim_expired() == 0
    clock.advance(1)
    await ledger.reserve([b], 0.2, 0, reference="lazy reclaim on reserve", ttl_seconds=60)
    assert await ledger.usage(b) == Usage(reserved_usd=0.2)
    assert await ledger.reclaim_expired() == 0
    await ledger.settle(r.id, 0.4, 3)  # the call did happen: its cost counts, the hold is not given back twice
    assert await ledger.usage(b) == Usage(spent_usd=0.4, spent_tokens=3, reserved_usd=0.2)
    clock.advance(60)
    assert await ledger.reclaim_expired() == 1
    assert await ledger.usage(b) == Usage(spent_usd=0.4, spent_tokens=3)


async def test_a_new_window_starts_empty(ledger: MemoryLedger) -> None:
    march, april = line(usd=1.0), line(usd=1.0, start=dt.datetime(2024, 4, 1, tzinfo=dt.UTC))
    r = await ledger.reserve([march], 1.0, 0, reference="a")
    await ledger.settle(r.id, 1.0, 0)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([march], 0.01, 0, reference="b")
    assert await ledger.usage(april) == Usage()
    await ledger.reserve([april], 1.0, 0, reference="c")


async def test_call_log(ledger: MemoryLedger, clock: Clock) -> None:
    b = line()
    r = await ledger.reserve([b], 0.1, 0, reference="a")
    await ledger.settle(r.id, 0.1, 15, call(workflow="wf-1"))
    clock.advance(10)
    await ledger.record(call(workflow="wf-2", status="BudgetExceeded", cost_usd=0.0))
    await ledger.record(call(namespace="team-b", routing={"rule": "cheap"}))
    calls = await ledger.calls()
    assert [c.workflow for c in calls] == ["wf-1", "wf-2", "wf"]
    assert calls[0].budgets == ("team-a/b",)  # filled in from the reservation's lines
    assert calls[0].at == START + dt.timedelta(hours=1)
    assert [c.workflow for c in await ledger.calls(namespace="team-a")] == ["wf-1", "wf-2"]
    assert [c.workflow for c in await ledger.calls(workflow="wf-2")] == ["wf-2"]
    assert [c.workflow for c in await ledger.calls(since=clock.now)] == ["wf-2", "wf"]
    assert [c.workflow for c in await ledger.calls(limit=1)] == ["wf"]
    assert await ledger.calls(limit=0) == []


async def test_bad_amounts_name_the_argument(ledger: MemoryLedger) -> None:
    with pytest.raises(ValueError, match="reserve: usd must be a number >= 0, got -1"):
        await ledger.reserve([line()], -1, 0, reference="a")
    with pytest.raises(ValueError, match="reserve: usd must be a number >= 0, got nan"):
        await ledger.reserve([line()], float("nan"), 0, reference="a")
    with pytest.raises(ValueError, match="settle: tokens must be an integer >= 0"):
        await ledger.settle("x", 0, -3)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await ledger.reserve([line()], 0, 0, reference="a", ttl_seconds=0)


async def test_concurrent_reservations_never_overspend(ledger: MemoryLedger) -> None:
    b = line(usd=2.0)

    async def one(i: int) -> bool:
        try:
            r = await ledger.reserve([b], 0.03, 1, reference=str(i))
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)
        await ledger.settle(r.id, 0.03, 1)
        return True

    ok = await asyncio.gather(*(one(i) for i in range(200)))
    assert sum(ok) == 66  # 66 x $0.03 = $1.98; the 67th would be $2.01
    assert await ledger.usage(b) == Usage(spent_usd=1.98, spent_tokens=66)


def test_money_is_exact() -> None:
    assert sum((money(0.1) for _ in range(10)), start=money(0)) == money(1.0)
