"""Integration tests: real PostgreSQL (the session's ``postgres_dsn``), no cluster."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import AsyncIterator

import asyncpg
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


@pytest.fixture
async def own_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """A new, empty database of the test's own on the session's server, dropped afterwards: for what is one per
    database (the audit chain, the orphan sweep's view of every run) and for migrations from nothing."""
    name = f"agentflow_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield urllib.parse.urlunsplit(urllib.parse.urlsplit(postgres_dsn)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
