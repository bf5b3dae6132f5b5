"""The budget ledger's contract: reserve before a model call, settle after it, never overspend.

Implementations: :class:`agentflow.storage.budgets.PostgresLedger` (shared by every gateway and operator
replica; atomic in PostgreSQL) and :class:`agentflow.storage.memory_ledger.MemoryLedger` (one process: the
local runner and unit tests). Both keep the same rules:

- A reservation covers every budget line that applies to the call, all or nothing.
- A *hard* line refuses a reservation when ``spent + reserved + asked`` would pass its limit
  (dollars or tokens): :class:`BudgetExceeded`, naming the budget, what it allows and what was asked.
- A *soft* line always accepts; crossing its limit is reported, not refused.
- ``settle`` replaces the reserved amounts by what the call actually cost and records the call
  (:class:`LlmCall`) in the same transaction; settling or releasing twice is a no-op.
- Reservations not settled within their ``ttl_seconds`` expire (a crashed gateway cannot hold money).

Windows are computed by the caller (agentflow.cost.periods) and passed in: a new window starts empty,
which is how periods roll over.

Errors::

    LedgerError          base
    ├── BudgetExceeded   a hard budget cannot fit the reservation (.budget, .limit_usd, .limit_tokens, ...)
    └── UnknownReservation  settle/release of an id this ledger never issued
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetLine",
    "LedgerError",
    "LlmCall",
    "Reservation",
    "UnknownReservation",
    "Usage",
]


class LedgerError(Exception):
    """Base of the ledger's errors."""


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetLine:
    """One Budget in one window: what a reservation is checked against."""

    budget_uid: str
    namespace: str
    name: str
    window_start: datetime
    window_end: datetime | None  # None: period total
    limit_usd: float | None
    limit_tokens: int | None
    hard: bool

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.budget_uid, self.window_start)


class BudgetExceeded(LedgerError):
    """A hard budget cannot fit what a call asked for. The message says what is left and what was asked."""

    def __init__(self, line: BudgetLine, asked_usd: float, asked_tokens: int, usage: Usage) -> None:
        self.line = line
        self.asked_usd = asked_usd
        self.asked_tokens = asked_tokens
        self.usage = usage
        parts = []
        if line.limit_usd is not None:
            left = max(0.0, line.limit_usd - usage.spent_usd - usage.reserved_usd)
            parts.append(f"${left:.6f} of ${line.limit_usd:.6f} left, ${asked_usd:.6f} asked")
        if line.limit_tokens is not None:
            left_t = max(0, line.limit_tokens - usage.spent_tokens - usage.reserved_tokens)
            parts.append(f"{left_t} of {line.limit_tokens} tokens left, {asked_tokens} asked")
        super().__init__(
            f"Budget {line.namespace}/{line.name} (hard) is exhausted for the window starting "
            f"{line.window_start.isoformat()}: {'; '.join(parts)}; raise spec.limits or wait for the next period"
        )


class UnknownReservation(LedgerError):
    """settle/release named a reservation this ledger never issued."""


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """What a budget line has spent and has reserved (calls in flight)."""

    spent_usd: float = 0.0
    spent_tokens: int = 0
    reserved_usd: float = 0.0
    reserved_tokens: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Reservation:
    """Money and tokens held for one call on every line that applies to it."""

    id: str
    lines: tuple[BudgetLine, ...]
    usd: float
    tokens: int
    warnings: tuple[str, ...] = ()  # soft lines passed their limit, in words


@dataclasses.dataclass(frozen=True, slots=True)
class LlmCall:
    """One model call as the gateway made it: what cost reports, calibration and attribution read."""

    namespace: str
    workflow: str
    run_uid: str
    node: str
    attempt: int
    step: str
    agent: str
    prompt: str  # PromptVersion name ("" for none)
    model_requested: str
    model_used: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool
    status: str  # "ok" or an error type, e.g. "BudgetExceeded", "RateLimited"
    budgets: tuple[str, ...] = ()  # "namespace/name" of the lines charged
    routing: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the router's decision and why
    at: datetime | None = None  # set by the ledger when None


class BudgetLedger(Protocol):
    """Reserve, settle, release; see the module docstring for the rules."""

    async def reserve(
        self, lines: Sequence[BudgetLine], usd: float, tokens: int, *, reference: str, ttl_seconds: float = 300.0
    ) -> Reservation: ...

    async def settle(self, reservation_id: str, usd: float, tokens: int, call: LlmCall | None = None) -> None: ...

    async def release(self, reservation_id: str) -> None: ...

    async def usage(self, line: BudgetLine) -> Usage: ...

    async def record(self, call: LlmCall) -> None:
        """Record a call that needed no reservation (a cache hit, a refused call)."""
        ...
