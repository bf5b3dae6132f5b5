"""Integration tests: real PostgreSQL (the session's ``postgres_dsn``), no cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentflow.storage import PostgresStore


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    """A migrated store on the session's database; tests use their own run uids."""
    store = await PostgresStore.connect(postgres_dsn, min_size=1, max_size=8)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()
