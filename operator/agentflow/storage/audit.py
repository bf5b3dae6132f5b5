"""The audit chain in PostgreSQL: one linear hash chain shared by every operator and gateway replica.

Tables (created by :meth:`PostgresAuditLog.migrate`, idempotent)::

    agentflow_audit        seq bigint PRIMARY KEY, at, kind, actor, namespace, subject, decision (text),
                           data json (text, not jsonb: it must read back exactly as it was hashed),
                           prev_hash, hash (see agentflow.audit.chain for what the hash covers)
    agentflow_audit_head   one row: the seq and hash of the last row appended. Every append locks it
                           (SELECT ... FOR UPDATE), so concurrent writers in any number of processes
                           extend the chain one after the other, never forking it; a hand-made INSERT
                           or DELETE at the end leaves it behind, which verify reports

Appends are all or nothing (one transaction per batch) and durable before :meth:`append` returns.
:meth:`snapshot` reads the chain in one REPEATABLE READ transaction (a consistent view while
writers go on), streaming rows through a cursor, for ``agentflow audit verify`` and ``export``.

Errors are the storage layer's (agentflow.storage.postgres): StorageUnavailable (retry),
StorageError (the message says what to fix); an event that cannot be chained raises
agentflow.audit.events.AuditEventError (a ValueError naming the field) before anything is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import orjson

from ..audit.chain import EMPTY, AuditReport, ChainVerifier, Head, check_recorded_head, link
from ..audit.events import check_event
from ..audit.records import AuditEvent
from ..engine.canonical import canonical_json
from .migrations import Schema, migrate
from .postgres import _THIRD_PARTY, StorageError, _translate, open_pool

__all__ = ["AuditSnapshot", "PostgresAuditLog"]

_STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS agentflow_audit (
        seq bigint NOT NULL CHECK (seq >= 0),
        at text NOT NULL,
        kind text NOT NULL,
        actor text NOT NULL,
        namespace text NOT NULL,
        subject text NOT NULL,
        decision text NOT NULL,
        data json NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL,
        CONSTRAINT agentflow_audit_pkey PRIMARY KEY (seq)
    )
    """,
    "CREATE INDEX IF NOT EXISTS agentflow_audit_namespace ON agentflow_audit (namespace, seq)",
    """
    CREATE TABLE IF NOT EXISTS agentflow_audit_head (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        seq bigint NOT NULL,
        hash text NOT NULL
    )
    """,
)



async def _seed_head(conn: Any) -> None:
    """The head record of an empty chain; refuses a chain whose head record was deleted."""
    if await conn.fetchval("SELECT count(*) FROM agentflow_audit_head") == 0:
        last = await conn.fetchrow("SELECT seq, hash FROM agentflow_audit ORDER BY seq DESC LIMIT 1")
        if last is not None:
            raise StorageError(
                f"migrate the audit schema: agentflow_audit holds rows up to {last['seq']} but its head "
                "record (agentflow_audit_head) is missing: it was deleted outside AgentFlow; run "
                "`agentflow audit verify`, then restore the head record from a backup"
            )
        await conn.execute("INSERT INTO agentflow_audit_head (id, seq, hash) VALUES (true, $1, $2)",
                           EMPTY.seq, EMPTY.hash)


SCHEMA = Schema("audit", "agentflow_audit_schema_version", ((1, "the audit chain and its head", _STATEMENTS),),
                finish=_seed_head)

_COLUMNS = "seq, at, kind, actor, namespace, subject, decision, data::text AS data, prev_hash, hash"
_INSERT = (
    "INSERT INTO agentflow_audit (seq, at, kind, actor, namespace, subject, decision, data, prev_hash, hash) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json, $9, $10)"
)


def _raw(record: asyncpg.Record) -> dict[str, Any]:
    """A row as the verifier and exports take it: ROW_FIELDS, data parsed."""
    row = dict(record)
    # PostgreSQL's json accepts what orjson cannot read (huge numbers): kept as text, the hash will not match
    with contextlib.suppress(orjson.JSONDecodeError):
        row["data"] = orjson.loads(row["data"])
    return row


class AuditSnapshot:
    """A consistent, read-only view of the chain (see :meth:`PostgresAuditLog.snapshot`)."""

    def __init__(self, conn: Any, recorded_head: Head | None, last: Head, what: str, where: str) -> None:
        self._conn = conn
        self.recorded_head = recorded_head
        """What the writers recorded as the head (None: the head record is missing)."""
        self.last = last
        """The seq and hash of the row with the highest seq (EMPTY when there are none)."""
        self._what = what
        self._where = where

    async def rows(self, since_seq: int = 0, *, namespace: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Rows with seq >= ``since_seq`` (of one namespace if given), in seq order, streamed."""
        query = f"SELECT {_COLUMNS} FROM agentflow_audit WHERE seq >= $1"
        args: list[Any] = [since_seq]
        if namespace is not None:
            query += " AND namespace = $2"
            args.append(namespace)
        query += " ORDER BY seq"
        try:
            async for record in self._conn.cursor(query, *args, prefetch=1000):
                yield _raw(record)
        except _THIRD_PARTY as exc:
            raise _translate(exc, self._what, self._where, None, None) from exc

    async def verify(self, expect_head: Head | None = None) -> AuditReport:
        """Verify the whole chain from row 0, then compare its end with the recorded head."""
        verifier = ChainVerifier(expect_head=expect_head)
        async for raw in self.rows():
            if not verifier.feed(raw):
                break
        report = verifier.finish()
        if self.recorded_head is None:
            if report.ok and report.head != EMPTY:
                notes = (*report.notes, "the head record (agentflow_audit_head) is missing: it was deleted")
                report = AuditReport(True, report.checked, report.head, None, notes)
            return report
        return check_recorded_head(report, self.recorded_head)


class PostgresAuditLog:
    """The audit chain in PostgreSQL; an :class:`~agentflow.audit.records.AuditSink`. Safe to share between tasks."""

    def __init__(self, pool: asyncpg.Pool, *, where: str = "the configured DSN") -> None:
        """Wrap a pool built with ``init=init_connection`` (a PostgresStore's works too); :meth:`connect` builds one."""
        self._pool = pool
        self._where = where

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10.0
    ) -> PostgresAuditLog:
        """Open a connection pool. Raises StorageUnavailable when PostgreSQL cannot be reached."""
        pool, where = await open_pool(dsn, "agentflow-audit", "connect", min_size=min_size, max_size=max_size,
                                      timeout=timeout)
        return cls(pool, where=where)

    async def close(self) -> None:
        """Close the pool (waits for the connections in use). Safe to call twice."""
        await self._pool.close()

    async def __aenter__(self) -> PostgresAuditLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"PostgresAuditLog({self._where})"

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _THIRD_PARTY as exc:
            if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == "agentflow_audit_pkey":
                raise StorageError(
                    f"{what}: a row exists past the recorded head of the audit chain: rows were inserted "
                    "outside AgentFlow; run `agentflow audit verify` and investigate before appending again"
                ) from exc
            if isinstance(exc, asyncpg.UndefinedTableError):
                raise StorageError(
                    f"{what}: PostgreSQL at {self._where}: {exc}; the database has no audit tables yet: call "
                    "PostgresAuditLog.migrate() (the operator does at startup) or check that the DSN names the "
                    "right database"
                ) from exc
            raise _translate(exc, what, self._where, None, None) from exc

    async def migrate(self) -> None:
        """Create the tables and the head record. Idempotent; concurrent callers wait for each other."""
        async with self._connection("migrate the audit schema") as conn, conn.transaction():
            await migrate(conn, [SCHEMA], self._where)

    async def append(self, events: Sequence[AuditEvent]) -> None:
        """Chain ``events`` after the current head, all or none, durably. AuditEventError if one is invalid."""
        if not events:
            return
        for i, event in enumerate(events):
            check_event(event, f"events[{i}]")
        what = f"append {len(events)} audit event(s)"
        async with self._connection(what) as conn, conn.transaction():
            record = await conn.fetchrow("SELECT seq, hash FROM agentflow_audit_head WHERE id FOR UPDATE")
            if record is None:
                raise StorageError(
                    f"{what}: the audit head record (agentflow_audit_head) is missing: call migrate() first; "
                    "if the chain has rows, the record was deleted outside AgentFlow (run `agentflow audit verify`)"
                )
            rows = link(Head(record["seq"], record["hash"]), events)
            await conn.executemany(
                _INSERT,
                [
                    (r.seq, e.at, e.kind, e.actor, e.namespace, e.subject, e.decision,
                     canonical_json(dict(e.data)).decode(), r.prev_hash, r.hash)
                    for r in rows
                    for e in (r.event,)
                ],
            )
            await conn.execute("UPDATE agentflow_audit_head SET seq = $1, hash = $2 WHERE id", rows[-1].seq,
                               rows[-1].hash)

    async def head(self) -> Head:
        """The recorded head (EMPTY before the first append)."""
        async with self._connection("read the audit head") as conn:
            record = await conn.fetchrow("SELECT seq, hash FROM agentflow_audit_head WHERE id")
        return EMPTY if record is None else Head(record["seq"], record["hash"])

    async def rows(self, since_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """One page of rows with seq >= ``since_seq``, in seq order (page on with the last seq + 1)."""
        async with self._connection("read audit rows") as conn:
            records = await conn.fetch(
                f"SELECT {_COLUMNS} FROM agentflow_audit WHERE seq >= $1 ORDER BY seq LIMIT $2", since_seq, limit
            )
        return [_raw(r) for r in records]

    @contextlib.asynccontextmanager
    async def snapshot(self, what: str = "read the audit chain") -> AsyncIterator[AuditSnapshot]:
        """A consistent read-only view (one REPEATABLE READ transaction) while writers go on appending."""
        async with self._connection(what) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            recorded = await conn.fetchrow("SELECT seq, hash FROM agentflow_audit_head WHERE id")
            last = await conn.fetchrow("SELECT seq, hash FROM agentflow_audit ORDER BY seq DESC LIMIT 1")
            yield AuditSnapshot(
                conn,
                None if recorded is None else Head(recorded["seq"], recorded["hash"]),
                EMPTY if last is None else Head(last["seq"], last["hash"]),
                what,
                self._where,
            )

    async def verify(self, expect_head: Head | None = None) -> AuditReport:
        """Verify the whole chain in one snapshot (see :meth:`AuditSnapshot.verify`)."""
        async with self.snapshot("verify the audit chain") as snap:
            return await snap.verify(expect_head)
