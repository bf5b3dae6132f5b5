"""Results stored by one replica heard by another (agentflow.storage.notices): PostgreSQL LISTEN/NOTIFY on a real
server, a result stored twice notified once, and a listening connection killed listened again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agentflow.storage import notices
from agentflow.storage.database import Database


@pytest.fixture
async def two(own_dsn: str) -> AsyncIterator[tuple[Database, Database]]:
    a, b = await Database.connect(own_dsn, min_size=1, max_size=4), await Database.connect(own_dsn, min_size=1,
                                                                                          max_size=4)
    try:
        await a.migrate()
        yield a, b
    finally:
        await a.close()
        await b.close()


async def until(heard: list[str], count: int) -> None:
    for _ in range(200):
        if len(heard) >= count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"heard {heard}, wanted {count}")


async def test_a_result_stored_on_one_replica_is_heard_on_the_other(two: tuple[Database, Database], own_dsn: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notices, "MIN_BACKOFF_SECONDS", 0.05)
    a, b = two
    heard: list[str] = []
    stopped = asyncio.Event()
    task = asyncio.create_task(a.notices.run(stopped, heard.append))
    try:
        await asyncio.sleep(0.3)  # listening
        b.store.notify_results = True
        assert await b.store.put_result("run-1", "s0", 1, {"output": 1})
        await until(heard, 1)
        assert not await b.store.put_result("run-1", "s0", 1, {"output": 2})  # not stored: not notified
        b.store.notify_results = False
        assert await b.store.put_result("run-3", "s0", 1, {"output": 3})  # a store that does not notify
        await asyncio.sleep(0.3)
        assert heard == ["run-1"]

        # the listening connection is killed (a failover of PostgreSQL, an idle timeout): listened again
        admin = await asyncpg.connect(own_dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        finally:
            await admin.close()
        assert killed >= 1
        b.store.notify_results = True
        for attempt in range(100):  # until the listener is back: each try stores a result of its own
            await b.store.put_result("run-2", f"try{attempt}", 1, {"output": 1})
            await asyncio.sleep(0.1)
            if "run-2" in heard:
                break
        assert "run-2" in heard
    finally:
        stopped.set()
        await asyncio.wait_for(task, 5.0)
