"""PostgresStore against a real PostgreSQL: journal fencing, first result wins, large values, migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import pytest

from agentflow.engine.journal import Journal, Record, verify
from agentflow.engine.values import Event, EventType
from agentflow.storage import (
    SCHEMA_VERSION,
    InvalidValue,
    JournalConflict,
    PostgresStore,
    StorageError,
    StorageUnavailable,
)

pytestmark = pytest.mark.integration


def new_run() -> str:
    return f"run-{uuid.uuid4()}"


def events(n: int, start: int = 0, node: str = "step") -> list[Event]:
    return [Event(EventType.step_started, f"{node}{i}", {"attempt": 1, "i": i}, 1_700_000_000.5 + i) for i in
            range(start, start + n)]  # fmt: skip


def chain(journal: Journal, evs: Iterable[Event]) -> list[Record]:
    return journal.extend(evs)


# --------------------------------------------------------------------------- migrations


async def test_migrate_is_idempotent_and_concurrent_safe(store: PostgresStore, postgres_dsn: str) -> None:
    await store.migrate()
    await asyncio.gather(*(store.migrate() for _ in range(5)))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM agentflow_schema_version")]
    finally:
        await conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


@pytest.fixture
def empty_dsn(own_dsn: str) -> str:
    """A new, empty database on the session's server, dropped afterwards."""
    return own_dsn


async def test_an_unmigrated_database_says_to_migrate(empty_dsn: str) -> None:
    async with await PostgresStore.connect(empty_dsn) as empty:
        with pytest.raises(StorageError, match=r"no AgentFlow schema yet: call PostgresStore.migrate\(\)"):
            await empty.load_journal("r")
        await empty.migrate()
        assert await empty.load_journal("r") == []


async def test_a_newer_schema_is_refused(empty_dsn: str) -> None:
    async with await PostgresStore.connect(empty_dsn) as store:
        await store.migrate()
        conn = await asyncpg.connect(empty_dsn)
        try:
            await conn.execute("INSERT INTO agentflow_schema_version (version, description) VALUES (999, 'future')")
        finally:
            await conn.close()
        with pytest.raises(StorageError, match=r"schema version 999, newer than this AgentFlow knows.*upgrade"):
            await store.migrate()


# --------------------------------------------------------------------------- journal


async def test_journal_roundtrip_keeps_every_hash(store: PostgresStore) -> None:
    run = new_run()
    journal = Journal()
    tricky = {
        "floats": [1e16, -0.0, 0.1, 1.5e-10, 1e300, 2.0],
        "ints": [0, -1, 2**63 - 1],
        "text": 'naïve ☃ \u0000 nul and "quotes" \\ and \n newlines',
        "nested": {"b": [None, True, False], "a": {"z": 1, "é": "x"}},
    }
    first = chain(journal, [Event(EventType.run_started, None, {"workflow": "w", "inputs": tricky, "seed": 7}, 0)])
    first += chain(journal, events(3))
    await store.append(run, first)
    second = chain(journal, events(2, start=3))
    await store.append(run, second)

    loaded = await store.load_journal(run)
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in journal.records]
    assert [r.to_json() for r in loaded] == [r.to_json() for r in journal.records]
    report = verify([r.to_dict() for r in loaded], head=journal.head)
    assert report.ok, str(report)

    tail = await store.load_journal(run, after_seq=3)
    assert [r.seq for r in tail] == [4, 5]
    assert await store.load_journal(new_run()) == []


async def test_append_that_does_not_continue_the_head_is_a_conflict(store: PostgresStore) -> None:
    run = new_run()
    journal = Journal()
    await store.append(run, chain(journal, events(2)))

    stale = Journal()  # a writer that never saw the stored records: its batch starts at seq 0
    with pytest.raises(JournalConflict, match=r"record 0 was not appended.*load_journal") as info:
        await store.append(run, chain(stale, events(1, node="other")))
    assert info.value.run_uid == run and info.value.seq == 0

    ahead = Journal(journal.records)
    chain(ahead, events(1, start=2))  # seq 2, never stored
    with pytest.raises(JournalConflict, match="record 3"):
        await store.append(run, chain(ahead, events(1, start=3)))

    assert [r.seq for r in await store.load_journal(run)] == [0, 1]
    await store.append(run, [])  # nothing to do


async def test_a_batch_that_is_not_a_chain_is_refused(store: PostgresStore) -> None:
    journal = Journal()
    records = chain(journal, events(3))
    with pytest.raises(ValueError, match="does not follow record 0"):
        await store.append(new_run(), [records[0], records[2]])


async def test_two_concurrent_appenders_exactly_one_wins(store: PostgresStore) -> None:
    for _ in range(20):
        run = new_run()
        base = Journal()
        await store.append(run, chain(base, events(3)))
        a, b = Journal(base.records), Journal(base.records)
        batch_a = chain(a, events(2, start=3, node="a"))
        batch_b = chain(b, events(3, start=3, node="b"))
        outcomes = await asyncio.gather(store.append(run, batch_a), store.append(run, batch_b), return_exceptions=True)
        errors = [o for o in outcomes if o is not None]
        assert len(errors) == 1 and isinstance(errors[0], JournalConflict), outcomes
        winner = a if outcomes[0] is None else b
        loaded = await store.load_journal(run)
        assert [r.to_dict() for r in loaded] == [r.to_dict() for r in winner.records]
        assert verify([r.to_dict() for r in loaded], head=winner.head).ok


async def test_a_corrupted_row_names_the_run_and_seq(store: PostgresStore, postgres_dsn: str) -> None:
    run = new_run()
    await store.append(run, chain(Journal(), events(2)))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            "UPDATE agentflow_journal SET record = '{\"seq\": 1}'::json WHERE run_uid = $1 AND seq = 1", run
        )
    finally:
        await conn.close()
    with pytest.raises(StorageError, match=rf"run '{run}'.*seq 1.*missing field"):
        await store.load_journal(run)


# --------------------------------------------------------------------------- attempts and results


async def test_attempts_are_stored_once(store: PostgresStore) -> None:
    run = new_run()
    payload = {"request": {"runId": run, "node": "a", "attempt": 1}, "manifests": "kind: Agent\n"}
    assert await store.get_attempt(run, "a", 1) is None
    await store.put_attempt(run, "a", 1, payload)
    await store.put_attempt(run, "a", 1, {"other": True})  # already there: kept as it was
    assert await store.get_attempt(run, "a", 1) == payload
    assert await store.get_attempt(run, "a", 2) is None
    assert await store.get_attempt(run, "b", 1) is None


async def test_first_result_wins_under_concurrency(store: PostgresStore) -> None:
    run = new_run()
    results: list[dict[str, Any]] = [{"output": {"writer": i}, "error": None, "calls": []} for i in range(20)]
    stored = await asyncio.gather(*(store.put_result(run, "classify[3]", 1, r) for r in results))
    assert sum(stored) == 1
    winner = results[stored.index(True)]
    assert await store.get_results(run) == {("classify[3]", 1): winner}
    assert await store.put_result(run, "classify[3]", 1, results[0]) is False
    assert await store.put_result(run, "classify[3]", 2, results[1]) is True
    assert set(await store.get_results(run)) == {("classify[3]", 1), ("classify[3]", 2)}


async def test_large_results(store: PostgresStore) -> None:
    run = new_run()
    big_text = "x" * (20 * 2**20)
    many_items = [{"i": i, "text": "lorem ipsum " * 8} for i in range(100_000)]  # ~12 MB of structure
    await store.put_result(run, "big", 1, {"output": big_text, "error": None, "calls": []})
    await store.put_result(run, "many", 1, {"output": many_items, "error": None, "calls": []})
    results = await store.get_results(run)
    assert results[("big", 1)]["output"] == big_text
    assert results[("many", 1)]["output"] == many_items


async def test_delete_run_forgets_only_that_run(store: PostgresStore) -> None:
    gone, kept = new_run(), new_run()
    for run in (gone, kept):
        await store.append(run, chain(Journal(), events(2)))
        await store.put_attempt(run, "a", 1, {"x": 1})
        await store.put_result(run, "a", 1, {"output": 1})
    await store.delete_run(gone)
    assert await store.load_journal(gone) == []
    assert await store.get_attempt(gone, "a", 1) is None
    assert await store.get_results(gone) == {}
    assert len(await store.load_journal(kept)) == 2
    assert await store.get_results(kept) == {("a", 1): {"output": 1}}
    await store.delete_run(gone)  # twice is fine


# --------------------------------------------------------------------------- errors


async def test_values_postgres_refuses_are_invalid_values(store: PostgresStore) -> None:
    run = new_run()
    with pytest.raises(InvalidValue, match="JSON values"):
        await store.put_attempt(run, "a", 1, {"not json": {1, 2}})
    assert await store.get_results(run) == {}


async def test_results_read_back_exactly_as_written(store: PostgresStore) -> None:
    """Key order, NUL characters and number forms survive: the next step's prompt depends on them."""
    run = new_run()
    result = {"output": {"zeta": 1, "id": "x", "a": [1e16, -0.0, "nul \u0000 ok"], "title": "t"}}
    await store.put_result(run, "a", 1, result)
    stored = (await store.get_results(run))[("a", 1)]
    assert list(stored["output"]) == ["zeta", "id", "a", "title"]
    assert stored == result


async def test_an_unreachable_server_is_unavailable() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageUnavailable, match=rf"127\.0\.0\.1:{port}.*check that it is running"):
        await PostgresStore.connect(f"postgresql://u:secret@127.0.0.1:{port}/db", timeout=5)


async def test_a_closed_store_is_unavailable(postgres_dsn: str) -> None:
    store = await PostgresStore.connect(postgres_dsn)
    await store.close()
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.get_results("r")


async def test_messages_never_show_the_password(postgres_dsn: str) -> None:
    dsn = postgres_dsn.replace("postgres@", "nobody:hunter2@")
    with pytest.raises(StorageUnavailable) as info:
        await PostgresStore.connect(dsn)
    assert "hunter2" not in str(info.value)
    assert "nobody:***@" in str(info.value)
