"""The budget ledger in one process: the local runner's, and the reference the PostgreSQL ledger is tested
against. Same rules as :class:`agentflow.storage.budgets.PostgresLedger` (see
:mod:`agentflow.storage.ledger`), kept under one :class:`asyncio.Lock`.

Money is counted in :class:`~decimal.Decimal` to 1e-10 dollars (PostgreSQL's ``numeric(24, 10)`` in the
shared ledger), never summed as floats: a hundred calls of $0.01 fit a $1.00 budget exactly.

A reservation goes ``held`` → ``settled`` | ``released`` | ``expired``. Settling an expired reservation
still charges what the call cost (the call happened; only the hold was given back), settling or releasing
a reservation that is already settled or released changes nothing, and an id this ledger never issued is
:class:`~agentflow.storage.ledger.UnknownReservation`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from .ledger import BudgetExceeded, BudgetLine, LlmCall, Reservation, UnknownReservation, Usage

__all__ = [
    "MONEY_QUANTUM", "MemoryLedger", "budget_names", "check_amounts", "money", "over_limit", "soft_warning",
    "sorted_lines", "utc_now",
]

MONEY_QUANTUM: Final = Decimal("1e-10")
HELD, SETTLED, RELEASED, EXPIRED = "held", "settled", "released", "expired"


def money(usd: float) -> Decimal:
    """A dollar amount as the ledgers count it: a Decimal to 1e-10 (the shortest repr of the float)."""
    return Decimal(repr(float(usd))).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_amounts(what: str, usd: float, tokens: int) -> None:
    """ValueError naming the argument when an amount is negative or not a number."""
    if not usd >= 0:  # also refuses NaN
        raise ValueError(f"{what}: usd must be a number >= 0, got {usd!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"{what}: tokens must be an integer >= 0, got {tokens!r}")


def sorted_lines(lines: Sequence[BudgetLine]) -> tuple[BudgetLine, ...]:
    """The lines once per (budget uid, window start), in that order: the order every ledger locks them in."""
    by_key = {line.key: line for line in lines}
    return tuple(by_key[key] for key in sorted(by_key))


def budget_names(lines: Sequence[BudgetLine]) -> tuple[str, ...]:
    """``namespace/name`` of each line: what a settled call's ``budgets`` says when the caller left it empty."""
    return tuple(f"{line.namespace}/{line.name}" for line in lines)


def over_limit(line: BudgetLine, spent_usd: Decimal, reserved_usd: Decimal, spent_tokens: int,
               reserved_tokens: int, usd: Decimal, tokens: int) -> bool:
    """Whether ``spent + reserved + asked`` passes a limit of the line (dollars or tokens)."""
    if line.limit_usd is not None and spent_usd + reserved_usd + usd > money(line.limit_usd):
        return True
    return line.limit_tokens is not None and spent_tokens + reserved_tokens + tokens > line.limit_tokens


def soft_warning(line: BudgetLine, usage: Usage, usd: float, tokens: int) -> str:
    """What a soft line says when a reservation takes it past its limit."""
    parts = []
    if line.limit_usd is not None:
        parts.append(f"${usage.spent_usd + usage.reserved_usd + usd:.6f} of ${line.limit_usd:.6f}")
    if line.limit_tokens is not None:
        parts.append(f"{usage.spent_tokens + usage.reserved_tokens + tokens} of {line.limit_tokens} tokens")
    return (f"Budget {line.namespace}/{line.name} (soft) is over its limit for the window starting "
            f"{line.window_start.isoformat()}: {'; '.join(parts)} spent or reserved; the call goes ahead")


@dataclasses.dataclass
class _Row:
    spent_usd: Decimal = Decimal(0)
    spent_tokens: int = 0
    reserved_usd: Decimal = Decimal(0)
    reserved_tokens: int = 0

    def usage(self) -> Usage:
        return Usage(float(self.spent_usd), self.spent_tokens, float(self.reserved_usd), self.reserved_tokens)


@dataclasses.dataclass
class _Held:
    reference: str
    keys: tuple[tuple[str, dt.datetime], ...]
    budgets: tuple[str, ...]  # namespace/name of each line
    usd: Decimal
    tokens: int
    expires_at: dt.datetime
    state: str = HELD


class MemoryLedger:
    """:class:`~agentflow.storage.ledger.BudgetLedger` in memory; safe to share between tasks of one loop.

    ``clock`` returns the current time (UTC, aware); tests pass a virtual one.
    """

    def __init__(self, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._rows: dict[tuple[str, dt.datetime], _Row] = {}
        self._held: dict[str, _Held] = {}
        self._calls: list[LlmCall] = []

    def _reclaim(self, now: dt.datetime) -> int:
        count = 0
        for held in self._held.values():
            if held.state == HELD and held.expires_at <= now:
                self._give_back(held)
                held.state = EXPIRED
                count += 1
        return count

    def _give_back(self, held: _Held) -> None:
        for key in held.keys:
            row = self._rows[key]
            row.reserved_usd = max(Decimal(0), row.reserved_usd - held.usd)
            row.reserved_tokens = max(0, row.reserved_tokens - held.tokens)

    async def reserve(
        self, lines: Sequence[BudgetLine], usd: float, tokens: int, *, reference: str, ttl_seconds: float = 300.0
    ) -> Reservation:
        check_amounts("reserve", usd, tokens)
        if not ttl_seconds > 0:
            raise ValueError(f"reserve: ttl_seconds must be > 0, got {ttl_seconds!r}")
        ordered = sorted_lines(lines)
        amount = money(usd)
        async with self._lock:
            now = self._clock()
            self._reclaim(now)
            warnings = []
            for line in ordered:
                row = self._rows.get(line.key, _Row())
                if over_limit(line, row.spent_usd, row.reserved_usd, row.spent_tokens, row.reserved_tokens,
                              amount, tokens):
                    if line.hard:
                        raise BudgetExceeded(line, usd, tokens, row.usage())
                    warnings.append(soft_warning(line, row.usage(), usd, tokens))
            for line in ordered:
                row = self._rows.setdefault(line.key, _Row())
                row.reserved_usd += amount
                row.reserved_tokens += tokens
            rid = uuid.uuid4().hex
            self._held[rid] = _Held(reference, tuple(line.key for line in ordered), budget_names(ordered),
                                    amount, tokens, now + dt.timedelta(seconds=ttl_seconds))
        return Reservation(rid, ordered, usd, tokens, tuple(warnings))

    async def settle(self, reservation_id: str, usd: float, tokens: int, call: LlmCall | None = None) -> None:
        check_amounts("settle", usd, tokens)
        async with self._lock:
            held = self._known(reservation_id)
            if held.state in (SETTLED, RELEASED):
                return
            if held.state == HELD:
                self._give_back(held)
            amount = money(usd)
            for key in held.keys:
                row = self._rows[key]
                row.spent_usd += amount
                row.spent_tokens += tokens
            held.state = SETTLED
            if call is not None:
                self._calls.append(self._stamped(call, held.budgets))

    async def release(self, reservation_id: str) -> None:
        async with self._lock:
            held = self._known(reservation_id)
            if held.state == HELD:
                self._give_back(held)
            if held.state in (HELD, EXPIRED):
                held.state = RELEASED

    async def usage(self, line: BudgetLine) -> Usage:
        async with self._lock:
            self._reclaim(self._clock())
            row = self._rows.get(line.key)
            return row.usage() if row is not None else Usage()

    async def record(self, call: LlmCall) -> None:
        async with self._lock:
            self._calls.append(self._stamped(call))

    async def reclaim_expired(self) -> int:
        """Give back the holds of reservations past their ttl; how many there were."""
        async with self._lock:
            return self._reclaim(self._clock())

    async def calls(
        self, namespace: str | None = None, since: dt.datetime | None = None, workflow: str | None = None,
        limit: int = 1000,
    ) -> list[LlmCall]:
        """The newest ``limit`` recorded calls that match, oldest first."""
        if limit < 0:
            raise ValueError(f"calls: limit must be >= 0, got {limit}")
        async with self._lock:
            found = [
                c for c in self._calls
                if (namespace is None or c.namespace == namespace)
                and (workflow is None or c.workflow == workflow)
                and (since is None or (c.at is not None and c.at >= since))
            ]
        found.sort(key=lambda c: c.at or dt.datetime.min.replace(tzinfo=dt.UTC))
        return found[-limit:] if limit else []

    def _known(self, reservation_id: str) -> _Held:
        held = self._held.get(reservation_id)
        if held is None:
            raise UnknownReservation(f"reservation {reservation_id!r} was never issued by this ledger")
        return held

    def _stamped(self, call: LlmCall, budgets: tuple[str, ...] = ()) -> LlmCall:
        return dataclasses.replace(call, at=call.at or self._clock(), budgets=call.budgets or budgets)
