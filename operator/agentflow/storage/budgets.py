"""The budget ledger in PostgreSQL (asyncpg), shared by every gateway and operator replica.

Implements :class:`agentflow.storage.ledger.BudgetLedger` with the rules written there; the one-process
twin is :class:`agentflow.storage.memory_ledger.MemoryLedger`. Tables (created by :meth:`PostgresLedger.migrate`,
versioned in ``agentflow_ledger_schema_version``)::

    agentflow_budget_windows       PRIMARY KEY (budget_uid, window_start): spent and reserved dollars
                                   (numeric(24,10), exact) and tokens of one Budget in one window;
                                   a new window is a new row, which is how periods roll over
    agentflow_budget_reservations  one row per reservation: amounts, the windows it holds
                                   (budget_uids[], window_starts[]), state held | settled | released |
                                   expired, expires_at (the database's clock, not a replica's)
    agentflow_llm_calls            the call log: every LlmCall field, routing as json, the reservation

Atomicity, across processes:

- ``reserve`` runs in one transaction: it creates the window rows it needs (``INSERT .. ON CONFLICT DO
  NOTHING``, in key order), locks them with ``SELECT .. ORDER BY budget_uid, window_start FOR UPDATE``
  (every transaction locks windows in that one order, so two never wait on each other in a cycle), checks
  the hard limits against the locked values, adds the hold and inserts the reservation. Two replicas
  cannot both take the last dollar: the second waits for the first's lock and then sees its hold.
- ``settle`` / ``release`` / expiry lock the reservation row first (``FOR UPDATE``), then its windows in
  key order; the state column makes them idempotent (only a ``held`` reservation gives its hold back,
  only once). ``reserve`` never waits on a reservation row, so there is no lock cycle either.
- Expired holds are given back by :meth:`PostgresLedger.reclaim_expired` (the operator calls it
  periodically) and lazily: a reservation refused by a hard line reclaims the expired holds on its lines
  and tries once more.

Errors: asyncpg's exceptions become :class:`~agentflow.storage.postgres.StorageError` and its subclasses
through the one translation in :mod:`agentflow.storage.postgres`; the ledger's own are
:class:`~agentflow.storage.ledger.BudgetExceeded` and :class:`~agentflow.storage.ledger.UnknownReservation`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import asyncpg

from .ledger import BudgetExceeded, BudgetLine, LlmCall, Reservation, UnknownReservation, Usage
from .memory_ledger import budget_names, check_amounts, money, over_limit, soft_warning, sorted_lines
from .migrations import Schema, migrate
from .postgres import _THIRD_PARTY, StorageError, _translate, open_pool

__all__ = ["LEDGER_SCHEMA_VERSION", "PostgresLedger"]

_MIGRATIONS: Final[tuple[tuple[int, str, tuple[str, ...]], ...]] = (
    (
        1,
        "budget windows, reservations and the LLM call log",
        (
            """
            CREATE TABLE IF NOT EXISTS agentflow_budget_windows (
                budget_uid text NOT NULL,
                window_start timestamptz NOT NULL,
                window_end timestamptz,
                namespace text NOT NULL,
                name text NOT NULL,
                spent_usd numeric(24, 10) NOT NULL DEFAULT 0,
                spent_tokens bigint NOT NULL DEFAULT 0,
                reserved_usd numeric(24, 10) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
                reserved_tokens bigint NOT NULL DEFAULT 0 CHECK (reserved_tokens >= 0),
                updated_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT agentflow_budget_windows_pkey PRIMARY KEY (budget_uid, window_start)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS agentflow_budget_reservations (
                id text PRIMARY KEY,
                reference text NOT NULL,
                budget_uids text[] NOT NULL,
                window_starts timestamptz[] NOT NULL,
                budgets text[] NOT NULL,
                usd numeric(24, 10) NOT NULL CHECK (usd >= 0),
                tokens bigint NOT NULL CHECK (tokens >= 0),
                state text NOT NULL CHECK (state IN ('held', 'settled', 'released', 'expired')),
                created_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL,
                finished_at timestamptz,
                settled_usd numeric(24, 10),
                settled_tokens bigint
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS agentflow_budget_reservations_held
                ON agentflow_budget_reservations (expires_at) WHERE state = 'held'
            """,
            """
            CREATE TABLE IF NOT EXISTS agentflow_llm_calls (
                id bigserial PRIMARY KEY,
                at timestamptz NOT NULL,
                namespace text NOT NULL,
                workflow text NOT NULL,
                run_uid text NOT NULL,
                node text NOT NULL,
                attempt integer NOT NULL,
                step text NOT NULL,
                agent text NOT NULL,
                prompt text NOT NULL,
                model_requested text NOT NULL,
                model_used text NOT NULL,
                input_tokens bigint NOT NULL,
                output_tokens bigint NOT NULL,
                cost_usd double precision NOT NULL,
                latency_ms double precision NOT NULL,
                cached boolean NOT NULL,
                status text NOT NULL,
                budgets text[] NOT NULL,
                routing json NOT NULL,
                reservation_id text UNIQUE
            )
            """,
            "CREATE INDEX IF NOT EXISTS agentflow_llm_calls_namespace_at ON agentflow_llm_calls (namespace, at)",
            "CREATE INDEX IF NOT EXISTS agentflow_llm_calls_workflow_at ON agentflow_llm_calls (workflow, at)",
            "CREATE INDEX IF NOT EXISTS agentflow_llm_calls_at ON agentflow_llm_calls (at)",
        ),
    ),
    (
        2,
        "a run's calls and reservations, collected with the run (agentflow.storage.retention)",
        (
            "CREATE INDEX IF NOT EXISTS agentflow_llm_calls_run ON agentflow_llm_calls (run_uid)",
            "CREATE INDEX IF NOT EXISTS agentflow_budget_reservations_run "
            "ON agentflow_budget_reservations (split_part(reference, '/', 1))",
        ),
    ),
)

SCHEMA: Final = Schema("budget ledger", "agentflow_ledger_schema_version", _MIGRATIONS)
LEDGER_SCHEMA_VERSION: Final = SCHEMA.version
"""The ledger schema version this code reads and writes."""

_LOCK_WINDOWS = """
SELECT budget_uid, window_start, spent_usd, spent_tokens, reserved_usd, reserved_tokens
FROM agentflow_budget_windows
WHERE (budget_uid, window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))
ORDER BY budget_uid, window_start
FOR UPDATE
"""

_GIVE_BACK = """
UPDATE agentflow_budget_windows w
SET reserved_usd = greatest(0, w.reserved_usd - $3), reserved_tokens = greatest(0, w.reserved_tokens - $4),
    updated_at = now()
WHERE (w.budget_uid, w.window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))
"""

_INSERT_CALL = """
INSERT INTO agentflow_llm_calls (at, namespace, workflow, run_uid, node, attempt, step, agent, prompt,
    model_requested, model_used, input_tokens, output_tokens, cost_usd, latency_ms, cached, status, budgets,
    routing, reservation_id)
VALUES (coalesce($1, now()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (reservation_id) DO NOTHING
"""

_CALL_COLUMNS = (
    "namespace, workflow, run_uid, node, attempt, step, agent, prompt, model_requested, model_used, input_tokens, "
    "output_tokens, cost_usd, latency_ms, cached, status, budgets, routing, at"
)


def _usage(row: asyncpg.Record | None) -> Usage:
    if row is None:
        return Usage()
    return Usage(float(row["spent_usd"]), int(row["spent_tokens"]), float(row["reserved_usd"]),
                 int(row["reserved_tokens"]))


def _keys(lines: Sequence[BudgetLine]) -> tuple[list[str], list[dt.datetime]]:
    return [line.budget_uid for line in lines], [line.window_start for line in lines]


def _call_args(call: LlmCall, budgets: Sequence[str], reservation_id: str | None) -> tuple[Any, ...]:
    return (
        call.at, call.namespace, call.workflow, call.run_uid, call.node, call.attempt, call.step, call.agent,
        call.prompt, call.model_requested, call.model_used, call.input_tokens, call.output_tokens, call.cost_usd,
        call.latency_ms, call.cached, call.status, list(call.budgets or budgets), dict(call.routing),
        reservation_id,
    )


class PostgresLedger:
    """:class:`~agentflow.storage.ledger.BudgetLedger` on a pool of its own (build it with :meth:`connect`,
    close it with :meth:`close`); safe to share between tasks, and between processes through PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, *, where: str = "the configured DSN") -> None:
        """Wrap a pool built by the caller with ``init=init_connection``; :meth:`connect` builds one."""
        self._pool = pool
        self._where = where

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10,
                      timeout: float = 10.0) -> PostgresLedger:
        """Open a connection pool. Raises StorageUnavailable when PostgreSQL cannot be reached."""
        pool, where = await open_pool(dsn, "agentflow-ledger", "connect the budget ledger", min_size=min_size,
                                      max_size=max_size, timeout=timeout)
        return cls(pool, where=where)

    async def close(self) -> None:
        """Close every connection (waits for the ones in use). Safe to call twice."""
        await self._pool.close()

    async def __aenter__(self) -> PostgresLedger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"PostgresLedger({self._where})"

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A pooled connection; any asyncpg error raised inside becomes a StorageError."""
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except asyncpg.UndefinedTableError as exc:
            raise StorageError(
                f"{what}: PostgreSQL at {self._where}: {exc}; the database has no budget ledger tables yet: call "
                "PostgresLedger.migrate() (the operator does at startup) or check that the DSN names the right "
                "database"
            ) from exc
        except _THIRD_PARTY as exc:
            raise _translate(exc, what, self._where, None, None) from exc

    # ----------------------------------------------------------------------- schema

    async def migrate(self) -> None:
        """Create or upgrade the ledger's tables. Idempotent; concurrent callers wait for each other."""
        async with self._connection("migrate the budget ledger") as conn, conn.transaction():
            await migrate(conn, [SCHEMA], self._where)

    # ----------------------------------------------------------------------- reserve, settle, release

    async def reserve(
        self, lines: Sequence[BudgetLine], usd: float, tokens: int, *, reference: str, ttl_seconds: float = 300.0
    ) -> Reservation:
        """Hold ``usd`` and ``tokens`` on every line, all or nothing (see the module docstring)."""
        check_amounts("reserve", usd, tokens)
        if not ttl_seconds > 0:
            raise ValueError(f"reserve: ttl_seconds must be > 0, got {ttl_seconds!r}")
        ordered = sorted_lines(lines)
        try:
            return await self._reserve(ordered, usd, tokens, reference, ttl_seconds)
        except BudgetExceeded:
            if not await self._reclaim(ordered):
                raise
        return await self._reserve(ordered, usd, tokens, reference, ttl_seconds)

    async def _reserve(self, ordered: tuple[BudgetLine, ...], usd: float, tokens: int, reference: str,
                       ttl_seconds: float) -> Reservation:
        amount = money(usd)
        uids, starts = _keys(ordered)
        rid = uuid.uuid4().hex
        warnings = []
        async with self._connection(f"reserve ${usd:.6f} and {tokens} tokens for {reference!r}") as conn, \
                conn.transaction():
            for line in ordered:  # key order: see the module docstring
                await conn.execute(
                    "INSERT INTO agentflow_budget_windows (budget_uid, window_start, window_end, namespace, name) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    line.budget_uid, line.window_start, line.window_end, line.namespace, line.name,
                )
            rows = {(r["budget_uid"], r["window_start"]): r for r in await conn.fetch(_LOCK_WINDOWS, uids, starts)}
            for line in ordered:
                row = rows[line.key]
                if over_limit(line, row["spent_usd"], row["reserved_usd"], row["spent_tokens"],
                              row["reserved_tokens"], amount, tokens):
                    if line.hard:
                        raise BudgetExceeded(line, usd, tokens, _usage(row))
                    warnings.append(soft_warning(line, _usage(row), usd, tokens))
            await conn.execute(
                "UPDATE agentflow_budget_windows w SET reserved_usd = w.reserved_usd + $3, "
                "reserved_tokens = w.reserved_tokens + $4, updated_at = now() "
                "WHERE (w.budget_uid, w.window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))",
                uids, starts, amount, tokens,
            )
            await conn.execute(
                "INSERT INTO agentflow_budget_reservations (id, reference, budget_uids, window_starts, budgets, usd, "
                "tokens, state, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'held', "
                "now() + make_interval(secs => $8))",
                rid, reference, uids, starts, list(budget_names(ordered)), amount, tokens, float(ttl_seconds),
            )
        return Reservation(rid, ordered, usd, tokens, tuple(warnings))

    async def settle(self, reservation_id: str, usd: float, tokens: int, call: LlmCall | None = None) -> None:
        """Charge what the call cost in place of its hold, and log the call; a no-op when done before."""
        check_amounts("settle", usd, tokens)
        amount = money(usd)
        async with self._connection(f"settle reservation {reservation_id!r}") as conn, conn.transaction():
            held = await self._lock_reservation(conn, reservation_id)
            if held["state"] in ("settled", "released"):
                return
            uids, starts = list(held["budget_uids"]), list(held["window_starts"])
            await conn.fetch(_LOCK_WINDOWS, uids, starts)
            if held["state"] == "held":
                await conn.execute(_GIVE_BACK, uids, starts, held["usd"], held["tokens"])
            await conn.execute(
                "UPDATE agentflow_budget_windows w SET spent_usd = w.spent_usd + $3, "
                "spent_tokens = w.spent_tokens + $4, updated_at = now() "
                "WHERE (w.budget_uid, w.window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))",
                uids, starts, amount, tokens,
            )
            await conn.execute(
                "UPDATE agentflow_budget_reservations SET state = 'settled', finished_at = now(), settled_usd = $2, "
                "settled_tokens = $3 WHERE id = $1",
                reservation_id, amount, tokens,
            )
            if call is not None:
                await conn.execute(_INSERT_CALL, *_call_args(call, held["budgets"], reservation_id))

    async def release(self, reservation_id: str) -> None:
        """Give the hold back (the call was not made); a no-op when settled or released before."""
        async with self._connection(f"release reservation {reservation_id!r}") as conn, conn.transaction():
            held = await self._lock_reservation(conn, reservation_id)
            if held["state"] in ("settled", "released"):
                return
            if held["state"] == "held":
                uids, starts = list(held["budget_uids"]), list(held["window_starts"])
                await conn.fetch(_LOCK_WINDOWS, uids, starts)
                await conn.execute(_GIVE_BACK, uids, starts, held["usd"], held["tokens"])
            await conn.execute(
                "UPDATE agentflow_budget_reservations SET state = 'released', finished_at = now() WHERE id = $1",
                reservation_id,
            )

    async def _lock_reservation(self, conn: Any, reservation_id: str) -> Mapping[str, Any]:
        held: Mapping[str, Any] | None = await conn.fetchrow(
            "SELECT state, budget_uids, window_starts, budgets, usd, tokens FROM agentflow_budget_reservations "
            "WHERE id = $1 FOR UPDATE",
            reservation_id,
        )
        if held is None:
            raise UnknownReservation(f"reservation {reservation_id!r} was never issued by this ledger")
        return held

    # ----------------------------------------------------------------------- expiry

    async def reclaim_expired(self, limit: int = 1000) -> int:
        """Give back the holds of up to ``limit`` reservations past their ttl; how many there were."""
        return await self._reclaim(None, limit)

    async def _reclaim(self, lines: Sequence[BudgetLine] | None, limit: int = 1000) -> int:
        what = "reclaim expired budget reservations"
        async with self._connection(what) as conn:
            if lines is None:
                ids = await conn.fetch(
                    "SELECT id FROM agentflow_budget_reservations WHERE state = 'held' AND expires_at <= now() "
                    "ORDER BY expires_at LIMIT $1", limit,
                )
            else:
                uids = [line.budget_uid for line in lines]
                ids = await conn.fetch(
                    "SELECT id FROM agentflow_budget_reservations WHERE state = 'held' AND expires_at <= now() "
                    "AND budget_uids && $1::text[] ORDER BY expires_at LIMIT $2", uids, limit,
                )
            count = 0
            for (rid,) in ids:
                async with conn.transaction():
                    held = await conn.fetchrow(
                        "SELECT budget_uids, window_starts, usd, tokens FROM agentflow_budget_reservations "
                        "WHERE id = $1 AND state = 'held' AND expires_at <= now() FOR UPDATE SKIP LOCKED",
                        rid,
                    )
                    if held is None:  # settled, released or reclaimed meanwhile
                        continue
                    uids, starts = list(held["budget_uids"]), list(held["window_starts"])
                    await conn.fetch(_LOCK_WINDOWS, uids, starts)
                    await conn.execute(_GIVE_BACK, uids, starts, held["usd"], held["tokens"])
                    await conn.execute(
                        "UPDATE agentflow_budget_reservations SET state = 'expired', finished_at = now() "
                        "WHERE id = $1", rid,
                    )
                    count += 1
        return count

    # ----------------------------------------------------------------------- reading

    async def usage(self, line: BudgetLine) -> Usage:
        """What the line's window has spent and holds (zero for a window no call has touched yet)."""
        async with self._connection(f"read the usage of Budget {line.namespace}/{line.name}") as conn:
            row = await conn.fetchrow(
                "SELECT spent_usd, spent_tokens, reserved_usd, reserved_tokens FROM agentflow_budget_windows "
                "WHERE budget_uid = $1 AND window_start = $2",
                line.budget_uid, line.window_start,
            )
        return _usage(row)

    async def record(self, call: LlmCall) -> None:
        """Log a call that needed no reservation (a cache hit, a refused call)."""
        async with self._connection(f"record a call of run {call.run_uid!r}") as conn:
            await conn.execute(_INSERT_CALL, *_call_args(call, (), None))

    async def calls(
        self, namespace: str | None = None, since: dt.datetime | None = None, workflow: str | None = None,
        limit: int = 1000,
    ) -> list[LlmCall]:
        """The newest ``limit`` logged calls that match, oldest first."""
        if limit < 0:
            raise ValueError(f"calls: limit must be >= 0, got {limit}")
        async with self._connection("read the LLM call log") as conn:
            rows = await conn.fetch(
                f"SELECT {_CALL_COLUMNS} FROM agentflow_llm_calls "
                "WHERE ($1::text IS NULL OR namespace = $1) AND ($2::timestamptz IS NULL OR at >= $2) "
                "AND ($3::text IS NULL OR workflow = $3) ORDER BY at DESC, id DESC LIMIT $4",
                namespace, since, workflow, limit,
            )
        return [_call(row) for row in reversed(rows)]


def _call(row: asyncpg.Record) -> LlmCall:
    fields = {f.name for f in dataclasses.fields(LlmCall)}
    values = {k: row[k] for k in fields}
    values["budgets"] = tuple(row["budgets"])
    values["routing"] = row["routing"] if isinstance(row["routing"], Mapping) else {}
    return LlmCall(**values)
