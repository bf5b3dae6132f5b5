"""Long-term memory in a real PostgreSQL with pgvector (the session's ``pgvector_dsn``: pgserver's PostgreSQL 16 +
pgvector, tests/services/postgres.py): the MemoryStore contract, the migration, and a server without pgvector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentflow.memory import HashingEmbedder, MemoryUnavailable
from agentflow.memory.postgres import PostgresMemoryStore
from agentflow.testing import MemoryAuditSink
from unit.memory.contract import Clock, MemoryContract

pytestmark = pytest.mark.integration


class TestPostgresStore(MemoryContract):
    @pytest.fixture
    async def store(self, pgvector_dsn: str) -> AsyncIterator[PostgresMemoryStore]:
        self.clock, self.audit = Clock(), MemoryAuditSink()
        store = await PostgresMemoryStore.connect(pgvector_dsn, HashingEmbedder(), audit=self.audit, clock=self.clock)
        await store.migrate()
        yield store
        await store.close()

    async def test_migrate_twice_and_the_column_is_a_pgvector_vector(self, store: PostgresMemoryStore) -> None:
        await store.migrate()
        kind = await store.pool.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'agentflow_memories'::regclass "
            "AND attname = 'embedding'")
        assert kind == "vector"


async def test_a_server_without_pgvector_is_named(postgres_dsn: str) -> None:
    """Debian's PostgreSQL 15 (the operator's usual test server) has no pgvector: migrate says so."""
    store = await PostgresMemoryStore.connect(postgres_dsn, HashingEmbedder())
    if await store.pool.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"):
        await store.close()
        pytest.skip("AGENTFLOW_TEST_POSTGRES_DSN names a server that has pgvector")
    try:
        with pytest.raises(MemoryUnavailable, match="pgvector extension is not available"):
            await store.migrate()
    finally:
        await store.close()


async def test_an_unreachable_server() -> None:
    with pytest.raises(MemoryUnavailable, match="memory store"):
        await PostgresMemoryStore.connect("postgresql://postgres@127.0.0.1:9/none", HashingEmbedder(), timeout=2)


def test_the_cli_erases_a_subject_and_records_it_in_the_operators_chain(
        pgvector_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import json
    import uuid

    from agentflow.cli import main
    from agentflow.memory import Scope
    from agentflow.storage import Database

    namespace = f"cli-{uuid.uuid4().hex[:6]}"

    async def seed() -> list[str]:
        db = await Database.connect(pgvector_dsn)
        await db.migrate()  # the operator's schema: the audit chain lives there
        await db.close()
        store = await PostgresMemoryStore.connect(pgvector_dsn, HashingEmbedder())
        await store.migrate()
        ids = [await store.save(Scope(namespace, agent), text) for agent, text in (
            ("support", "Ann Lee prefers e-mail."), ("billing", "Ann Lee pays by card."),
            ("billing", "Invoices go out monthly."))]
        await store.close()
        return ids

    ids = asyncio.run(seed())
    assert main(["memory", "forget", "--postgres-dsn", pgvector_dsn, "-n", namespace, "--subject", "Ann Lee",
                 "--by", "dpo", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["forgotten"]) == sorted(ids[:2])
    assert main(["memory", "list", "--postgres-dsn", pgvector_dsn, "-n", namespace, "--json"]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [ids[2]]

    async def last_row() -> dict[str, object]:
        from agentflow.storage.audit import PostgresAuditLog

        log = await PostgresAuditLog.connect(pgvector_dsn, min_size=1, max_size=1)
        rows = await log.rows()
        await log.close()
        return rows[-1]

    row = asyncio.run(last_row())
    assert (row["kind"], row["actor"], row["namespace"]) == ("memory_forget", "user:dpo", namespace)
    assert main(["audit", "verify", "--postgres-dsn", pgvector_dsn]) == 0
