"""The events outbox in PostgreSQL: what the events publisher (agentflow.events.publisher) drains to NATS.

Written by :meth:`PostgresStore.append <agentflow.storage.postgres.PostgresStore.append>` in the same
transaction as the journal records (one row per record, one per status transition), so an event exists
exactly when its record does, whether NATS is up or not. Read here::

    async with outbox.claim(500) as batch:     # None: another replica holds the lease this round
        ... publish batch.rows, in order ...
        batch.done(row.id)                     # published: deleted when the block ends (one transaction)
    await outbox.stats()                       # OutboxStats(pending, oldest_seconds): the lag

The lease: :meth:`PostgresOutbox.claim` opens a transaction that holds a transaction-level advisory lock
(``pg_try_advisory_xact_lock``) while its batch is published, so any number of replicas may run a publisher
and only one publishes at a time (never two copies of one event concurrently, and each run's events in
sequence order). The transaction ends with the batch: the published rows are deleted as it commits. If the
process dies in between, PostgreSQL ends the transaction (the lock goes, the rows stay) and the next
publisher publishes them again: JetStream drops the copies by their Nats-Msg-Id inside the stream's
duplicate window. ``idle_in_transaction_session_timeout`` bounds how long a vanished publisher can hold the
lease.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator

import asyncpg

from .errors import StorageError
from .postgres import _THIRD_PARTY, _translate

__all__ = ["LEASE_LOCK", "Claim", "EventSource", "OutboxRow", "OutboxStats", "PostgresOutbox"]

LEASE_LOCK = 0x61676E746F757462  # "agntoutb"


@dataclasses.dataclass(frozen=True, slots=True)
class EventSource:
    """What a run's journal records are about, given to the journal append for the events outbox."""

    namespace: str
    workflow: str
    phase: str | None = None
    """The Workflow's ``status.phase`` after the appended records (None: no status transitions)."""
    traceparent: str | None = None
    """The run's W3C trace context, carried as the ``traceparent`` header (the tracing work fills it in)."""


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event to publish. ``body``: the journal record's canonical JSON (kind ``journal``) or
    ``{"from", "to", "at"}`` (kind ``phase``), as stored."""

    id: int
    run_uid: str
    seq: int
    kind: str
    namespace: str
    workflow: str
    type: str
    body: bytes
    traceparent: str | None
    created_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    """Rows not yet published."""
    oldest_seconds: float
    """Age of the oldest of them (0 when there is none)."""


class Claim:
    """A batch claimed under the lease: publish ``rows`` in order and mark each one ``done``."""

    def __init__(self, rows: list[OutboxRow]) -> None:
        self.rows = rows
        self.published: list[int] = []

    def done(self, row_id: int) -> None:
        self.published.append(row_id)


_SELECT = ("SELECT id, run_uid, seq, kind, namespace, workflow, type, body::text AS body, traceparent, "
           "extract(epoch FROM created_at)::float8 AS created FROM agentflow_outbox ORDER BY id LIMIT $1")


class PostgresOutbox:
    def __init__(self, pool: asyncpg.Pool, *, where: str = "the configured DSN", lease_timeout: float = 60.0) -> None:
        """``lease_timeout``: seconds PostgreSQL waits on a publisher that holds the lease and sends nothing
        (a vanished process) before it ends its transaction and so frees the lease."""
        if lease_timeout <= 0:
            raise ValueError("lease_timeout must be > 0")
        self._pool = pool
        self._where = where
        self._lease_ms = int(lease_timeout * 1000)

    def __repr__(self) -> str:
        return f"PostgresOutbox({self._where})"

    @contextlib.contextmanager
    def _db(self, what: str) -> Iterator[None]:
        try:
            yield
        except _THIRD_PARTY as exc:
            raise _translate(exc, what, self._where, None, None) from exc

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Claim | None]:
        """The oldest ``limit`` rows under the lease, or None when another publisher holds it. Rows marked
        ``done`` are deleted when the block exits normally; an exception inside deletes nothing."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        with self._db("claim events from the outbox"):
            conn = await self._pool.acquire()
        try:
            with self._db("claim events from the outbox"):
                tx = conn.transaction()
                await tx.start()
            try:
                with self._db("claim events from the outbox"):
                    await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {self._lease_ms}")
                    leased = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LEASE_LOCK)
                    records = await conn.fetch(_SELECT, limit) if leased else []
                if not leased:
                    yield None
                else:
                    claim = Claim([OutboxRow(r["id"], r["run_uid"], r["seq"], r["kind"], r["namespace"],
                                             r["workflow"], r["type"], r["body"].encode(), r["traceparent"],
                                             r["created"]) for r in records])
                    yield claim
                    if claim.published:
                        with self._db("delete published events from the outbox"):
                            await conn.execute("DELETE FROM agentflow_outbox WHERE id = ANY($1::bigint[])",
                                               claim.published)
                with self._db("delete published events from the outbox"):
                    await tx.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
        finally:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def stats(self) -> OutboxStats:
        """How many events wait and how old the oldest is (PostgreSQL's clock on both ends)."""
        with self._db("read the outbox lag"):
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM agentflow_outbox) AS pending, "
                    "extract(epoch FROM clock_timestamp() - "
                    "(SELECT created_at FROM agentflow_outbox ORDER BY id LIMIT 1))::float8 AS oldest")
        if row is None:  # pragma: no cover - a SELECT without FROM returns one row
            raise StorageError("read the outbox lag: no row")
        return OutboxStats(int(row["pending"]), max(0.0, float(row["oldest"] or 0.0)))
