"""One PostgreSQL pool for everything the operator and the gateway keep there.

    db = await Database.connect(dsn)      # one pool (JSON codecs set up); StorageUnavailable if unreachable
    await db.migrate()                    # every schema, one transaction, one lock (agentflow.storage.migrations)
    db.store, db.ledger, db.audit         # PostgresStore, PostgresLedger, PostgresAuditLog on that pool
    db.outbox                             # PostgresOutbox: the events outbox the publisher drains
                                          # (written by db.store.append only with ``outbox=True``)
    db.notices                            # ResultNotices: results stored by other replicas (LISTEN)
    await db.close()

Built by the factory at startup (agentflow.factory) and closed at cleanup; nothing connects at import.
"""

from __future__ import annotations

import asyncpg

from .audit import SCHEMA as AUDIT_SCHEMA
from .audit import PostgresAuditLog
from .budgets import SCHEMA as LEDGER_SCHEMA
from .budgets import PostgresLedger
from .migrations import migrate
from .notices import ResultNotices
from .outbox import PostgresOutbox
from .postgres import _THIRD_PARTY, PostgresStore, _translate, open_pool
from .postgres import SCHEMA as JOURNAL_SCHEMA

__all__ = ["SCHEMAS", "Database"]

SCHEMAS = (JOURNAL_SCHEMA, LEDGER_SCHEMA, AUDIT_SCHEMA)


class Database:
    def __init__(self, pool: asyncpg.Pool, where: str, *, outbox: bool = False) -> None:
        """``outbox``: journal appends also write the events outbox (events are published)."""
        self.pool = pool
        self.where = where
        self.store = PostgresStore(pool, where=where, outbox=outbox)
        self.ledger = PostgresLedger(pool, where=where)
        self.audit = PostgresAuditLog(pool, where=where)
        self.outbox = PostgresOutbox(pool, where=where)
        self.notices = ResultNotices(pool, where=where)

    @classmethod
    async def connect(cls, dsn: str, *, application_name: str = "agentflow", min_size: int = 1,
                      max_size: int = 20, timeout: float = 10.0, outbox: bool = False) -> Database:
        pool, where = await open_pool(dsn, application_name, "connect", min_size=min_size, max_size=max_size,
                                      timeout=timeout)
        return cls(pool, where, outbox=outbox)

    async def migrate(self) -> None:
        """Create or upgrade every AgentFlow table. Idempotent; concurrent callers wait for each other."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await migrate(conn, SCHEMAS, self.where)
        except _THIRD_PARTY as exc:
            raise _translate(exc, "migrate the schema", self.where, None, None) from exc

    async def close(self) -> None:
        await self.pool.close()

    def __repr__(self) -> str:
        return f"Database({self.where})"
