"""Events with a real PostgreSQL and a real nats-server (tests/services): the outbox is written with the journal,
the publisher drains it in order exactly once, through a NATS outage, a crash between publish and delete, and two
replicas; the stream is made when missing; a tenant's NATS user reads its own namespace only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from prometheus_client import CollectorRegistry

from agentflow.engine.journal import Journal, Record, verify
from agentflow.engine.values import Event, EventType
from agentflow.events.errors import EventsUnavailable, PermissionDenied
from agentflow.events.jetstream import JetStream
from agentflow.events.publisher import EventMetrics, EventSink, OutboxPublisher, PublisherSettings
from agentflow.events.settings import ConnectSettings, StreamSettings
from agentflow.events.wire import EventMessage, decode
from agentflow.storage import JournalConflict
from agentflow.storage.database import Database
from agentflow.storage.outbox import EventSource
from services.nats import NatsServer, running_nats

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

STREAM = StreamSettings(name="AGENTFLOW", duplicate_window=600)
E = EventType


@pytest.fixture
async def db(postgres_dsn: str) -> AsyncIterator[Database]:
    """A migrated database with the outbox on, and nothing left in the outbox by earlier tests."""
    database = await Database.connect(postgres_dsn, outbox=True)
    try:
        await database.migrate()
        async with database.pool.acquire() as conn:
            await conn.execute("TRUNCATE agentflow_outbox, agentflow_event_runs")
        yield database
    finally:
        await database.close()


def run_events(n_items: int, at: float = 1_000.0) -> list[Event]:
    """A fan-out run's events, as the reconciler records them."""
    events = [Event(E.run_started, None, {"workflow": "wf", "inputs": {}}, at),
              Event(E.fan_out, "fan", {"count": n_items}, at)]
    for i in range(n_items):
        events.append(Event(E.step_scheduled, f"fan[{i}]", {"step": "fan", "kind": "tool", "attempt": 1}, at + i))
        events.append(Event(E.step_succeeded, f"fan[{i}]", {"attempt": 1, "output": {"i": i}}, at + i + 0.5))
    events.append(Event(E.run_finished, None, {"phase": "Succeeded", "outputs": {}}, at + n_items + 1))
    return events


async def append_run(db: Database, uid: str, events: Sequence[Event], namespace: str = "team-a",
                     workflow: str = "report.daily", batch: int = 3) -> list[Record]:
    """Append in batches, with the phase the Workflow would show after each."""
    journal = Journal()
    out: list[Record] = []
    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        phase = "Succeeded" if any(e.type is E.run_finished for e in chunk) else "Running"
        records = journal.extend(chunk)
        await db.store.append(uid, records, EventSource(namespace, workflow, phase))
        out.extend(records)
    return out


async def connect(server: NatsServer) -> JetStream:
    return await JetStream.connect(ConnectSettings((server.url,), request_timeout=2.0, connect_timeout=2.0,
                                                   reconnect_wait=0.2))


def publisher(db: Database, server: NatsServer, registry: CollectorRegistry | None = None,
              **settings: Any) -> OutboxPublisher:
    async def sink() -> EventSink:
        return await connect(server)

    options = {"idle": 0.05, "backoff_initial": 0.05, "backoff_max": 0.5, "stats_every": 0.0, **settings}
    return OutboxPublisher(db.outbox, sink, STREAM, EventMetrics(registry), PublisherSettings(**options))


async def stream_messages(server: NatsServer, subject: str = "agentflow.>") -> list[nats.aio.msg.Msg]:
    """Every message of the stream on ``subject``, with headers, in stream order."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM.name)
        if info.state.messages == 0:
            return []
        sub = await js.pull_subscribe(subject, stream=STREAM.name)
        out: list[Any] = []
        while True:
            try:
                batch = await sub.fetch(500, timeout=1)
            except nats.errors.TimeoutError:
                return out
            out.extend(batch)
            if batch[-1].metadata.num_pending == 0:
                return out
    finally:
        await nc.close()


async def drain_until_empty(pub: OutboxPublisher, rounds: int = 200) -> None:
    for _ in range(rounds):
        result = await pub.drain()
        if result.leased and result.claimed == 0:
            return
    raise AssertionError("the outbox did not empty")


def check_runs(messages: Sequence[Any], journals: dict[str, list[Record]]) -> None:
    """Every record of every run exactly once, in sequence order, chained (no gap, no copy)."""
    seen: dict[str, list[Record]] = {}
    for msg in messages:
        event = decode(msg.data)
        if event.kind == "journal" and event.run in journals:
            assert msg.headers["Nats-Msg-Id"] == f"{event.run}:{event.seq}"
            assert event.record is not None
            seen.setdefault(event.run, []).append(event.record)
    assert set(seen) == set(journals)
    for uid, records in journals.items():
        assert [r.seq for r in seen[uid]] == list(range(len(records))), uid
        assert seen[uid] == records
        assert verify(r.to_dict() for r in seen[uid]).ok


# -- the outbox is the journal's


async def test_the_outbox_is_written_with_the_journal_and_only_with_it(db: Database) -> None:
    uid = str(uuid.uuid4())
    journal = Journal()
    first = journal.extend(run_events(1)[:2])
    await db.store.append(uid, first, EventSource("team-a", "report.daily", "Running"))
    # a fenced-out writer (stale head) appends nothing, and so puts nothing in the outbox
    stale = Journal().extend([Event(E.run_started, None, {}, 5.0)])
    with pytest.raises(JournalConflict):
        await db.store.append(uid, stale, EventSource("team-a", "report.daily", "Failed"))
    more = journal.extend(run_events(1)[2:4])
    await db.store.append(uid, more, EventSource("team-a", "report.daily", "Running"))  # same phase: no transition
    last = journal.extend(run_events(1)[4:])
    await db.store.append(uid, last, EventSource("team-a", "report.daily", "Succeeded"))
    async with db.outbox.claim(100) as claim:
        assert claim is not None
        rows = sorted((r.seq, r.kind, r.type, r.namespace, r.workflow) for r in claim.rows if r.run_uid == uid)
        bodies = {(r.seq, r.kind): r.body for r in claim.rows if r.run_uid == uid}
    assert rows == [(0, "journal", "RunStarted", "team-a", "report.daily"), (1, "journal", "FanOut", *rows[0][3:]),
                    (1, "phase", "PhaseChanged", *rows[0][3:]),
                    (2, "journal", "StepScheduled", *rows[0][3:]), (3, "journal", "StepSucceeded", *rows[0][3:]),
                    (4, "journal", "RunFinished", *rows[0][3:]), (4, "phase", "PhaseChanged", *rows[0][3:])]
    # the record as the journal keeps it, byte for byte; the transitions from the last phase recorded
    stored = await db.store.load_journal(uid)
    assert bodies[(2, "journal")] == stored[2].to_json()
    assert orjson.loads(bodies[(1, "phase")]) == {"from": None, "to": "Running", "at": 1000.0}
    assert orjson.loads(bodies[(4, "phase")]) == {"from": "Running", "to": "Succeeded", "at": 1002.0}
    assert (await db.outbox.stats()).pending == 7


async def test_with_the_outbox_off_nothing_is_written(postgres_dsn: str, db: Database) -> None:
    plain = await Database.connect(postgres_dsn)  # outbox off: what the operator does without --nats-url
    try:
        await plain.store.append(str(uuid.uuid4()), Journal().extend(run_events(2)),
                                 EventSource("team-a", "wf", "Running"))
        assert (await plain.outbox.stats()).pending == 0
    finally:
        await plain.close()


# -- publishing


async def test_the_publisher_puts_every_record_on_the_stream_once_in_order(db: Database,
                                                                           nats_server: NatsServer) -> None:
    runs = {str(uuid.uuid4()): run_events(n) for n in (3, 7, 1)}
    journals = {uid: await append_run(db, uid, events) for uid, events in runs.items()}
    registry = CollectorRegistry()
    pub = publisher(db, nats_server, registry)
    try:
        await drain_until_empty(pub)
        await pub.refresh_stats(force=True)
    finally:
        await pub.close()
    messages = await stream_messages(nats_server)
    check_runs(messages, journals)
    first = messages[0]
    assert first.subject == "agentflow.team-a.report_daily.RunStarted"
    phases = [decode(m.data) for m in messages if decode(m.data).kind == "phase"]
    assert {(p.run, p.phase_from, p.phase_to) for p in phases} == {
        (uid, f, t) for uid in runs for f, t in ((None, "Running"), ("Running", "Succeeded"))}
    assert all(m.headers["Nats-Msg-Id"].endswith(":phase") for m in messages if decode(m.data).kind == "phase")
    sample = registry.get_sample_value
    total = sum(len(j) for j in journals.values())
    assert sample("agentflow_events_published_total", {"kind": "journal"}) == total
    assert sample("agentflow_events_published_total", {"kind": "phase"}) == 6
    assert sample("agentflow_events_pending") == 0 and sample("agentflow_events_lag_seconds") == 0
    # the stream was made as configured
    js = await connect(nats_server)
    try:
        info = await js._js.stream_info("AGENTFLOW")
        assert info.config.subjects == ["agentflow.>"] and info.config.duplicate_window == 600
    finally:
        await js.close()


async def test_a_nats_outage_never_blocks_appends_and_the_stream_catches_up(db: Database,
                                                                            nats_server: NatsServer) -> None:
    registry = CollectorRegistry()
    pub = publisher(db, nats_server, registry)
    stopped = asyncio.Event()
    task = asyncio.create_task(pub.run(stopped))
    sample = registry.get_sample_value
    try:
        before = {str(uuid.uuid4()): run_events(4) for _ in range(2)}
        journals = {uid: await append_run(db, uid, events) for uid, events in before.items()}
        await wait_for(lambda: sample("agentflow_events_published_total", {"kind": "journal"}) == sum(
            len(j) for j in journals.values()))
        nats_server.kill()
        # NATS is away: runs go on appending (the outbox takes it), and the lag shows
        during = {str(uuid.uuid4()): run_events(5) for _ in range(3)}
        for uid, events in during.items():
            journals[uid] = await append_run(db, uid, events)
        waiting = sum(len(journals[uid]) + 2 for uid in during)  # each run's records and its two transitions
        await wait_for(lambda: sample("agentflow_events_pending") == waiting)
        await wait_for(lambda: (sample("agentflow_events_publish_errors_total", {"reason": "unavailable"}) or 0) > 0)
        assert (sample("agentflow_events_lag_seconds") or 0) > 0
        nats_server.start()
        await wait_for(lambda: sample("agentflow_events_pending") == 0, timeout=60)
    finally:
        stopped.set()
        await asyncio.wait_for(task, 30)
        await pub.close()
    check_runs(await stream_messages(nats_server), journals)
    assert (await db.outbox.stats()).pending == 0


class CrashAfter:
    """A real JetStream sink whose process 'dies' (the round is cancelled) right after the n-th publish was acked:
    the rows are on the stream but not deleted from the outbox."""

    def __init__(self, inner: JetStream, n: int) -> None:
        self.inner, self.n = inner, n
        self.crashed = asyncio.Event()

    async def ensure_stream(self, stream: StreamSettings) -> list[str]:
        return await self.inner.ensure_stream(stream)

    async def publish(self, message: EventMessage, stream: str) -> bool:
        stored = await self.inner.publish(message, stream)
        self.n -= 1
        if self.n == 0:
            self.crashed.set()
            await asyncio.Event().wait()  # hangs until cancelled, as a process that died never goes on
        return stored

    async def close(self) -> None:
        await self.inner.close()


async def test_a_crash_between_publish_and_delete_publishes_nothing_twice(db: Database,
                                                                         nats_server: NatsServer) -> None:
    uid = str(uuid.uuid4())
    journals = {uid: await append_run(db, uid, run_events(6))}
    crashing = CrashAfter(await connect(nats_server), 5)

    async def sink() -> EventSink:
        return crashing

    first = OutboxPublisher(db.outbox, sink, STREAM, EventMetrics(), PublisherSettings(concurrency=1))
    round_ = asyncio.create_task(first.drain())
    await asyncio.wait_for(crashing.crashed.wait(), 30)
    round_.cancel()  # the replica dies: its transaction rolls back, its 5 rows stay in the outbox
    with pytest.raises(asyncio.CancelledError):
        await round_
    await first.close()
    assert (await db.outbox.stats()).pending == len(journals[uid]) + 2
    registry = CollectorRegistry()
    second = publisher(db, nats_server, registry)  # the next replica republishes them: JetStream drops the copies
    try:
        await drain_until_empty(second)
    finally:
        await second.close()
    assert registry.get_sample_value("agentflow_events_duplicates_total") == 5
    check_runs(await stream_messages(nats_server), journals)


async def test_two_replicas_publish_every_event_once_in_order(postgres_dsn: str, db: Database,
                                                              nats_server: NatsServer) -> None:
    other = await Database.connect(postgres_dsn, outbox=True)
    registries = [CollectorRegistry(), CollectorRegistry()]
    pubs = [publisher(db, nats_server, registries[0], batch=20), publisher(other, nats_server, registries[1],
                                                                            batch=20)]
    stopped = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stopped)) for p in pubs]
    try:
        runs = {str(uuid.uuid4()): run_events(8) for _ in range(12)}
        journals = dict(zip(runs, await asyncio.gather(*(append_run(db, uid, ev) for uid, ev in runs.items())),
                            strict=True))
        total = sum(len(j) for j in journals.values()) + 2 * len(runs)

        def published() -> float:
            return sum((r.get_sample_value("agentflow_events_published_total", {"kind": k}) or 0)
                       for r in registries for k in ("journal", "phase"))

        await wait_for(lambda: published() == total, timeout=60)
    finally:
        stopped.set()
        await asyncio.gather(*(asyncio.wait_for(t, 30) for t in tasks))
        for p in pubs:
            await p.close()
        await other.close()
    # Which replica held the lease for which round is up to the scheduler (on a loaded machine one may win every
    # round); what must hold either way: nothing published twice, every run complete and in order.
    assert all(r.get_sample_value("agentflow_events_duplicates_total") == 0 for r in registries)
    check_runs(await stream_messages(nats_server), journals)


# -- the stream


async def test_an_existing_stream_is_left_as_it_is_and_its_differences_said(nats_server: NatsServer,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name="AGENTFLOW", subjects=["agentflow.>"], duplicate_window=30)
    finally:
        await nc.close()
    js = await connect(nats_server)
    try:
        with caplog.at_level(logging.WARNING, logger="agentflow.events"):
            differences = await js.ensure_stream(STREAM)
        assert len(differences) == 1 and "duplicate window is 30s, shorter than the 600s" in differences[0]
        assert "left as it is" in caplog.text
        info = await js._js.stream_info("AGENTFLOW")
        assert info.config.duplicate_window == 30
    finally:
        await js.close()


async def test_nats_away_at_start_is_unavailable_not_a_hang() -> None:
    with running_nats() as server:
        url = server.url
    with pytest.raises(EventsUnavailable, match="is unavailable"):
        await JetStream.connect(ConnectSettings((url,), connect_timeout=0.5, reconnect_wait=0.1))


# -- tenants


TENANTS = """
accounts {
  AF {
    jetstream: enabled
    users: [
      {user: operator, password: op, permissions: {publish: ["agentflow.>", "$JS.API.>"], subscribe: ["_INBOX.>"]}}
      {user: team-a, password: ta, permissions: {
        publish: ["$JS.API.CONSUMER.CREATE.AGENTFLOW.*.agentflow.team-a.>", "$JS.API.CONSUMER.MSG.NEXT.AGENTFLOW.*",
                  "$JS.API.CONSUMER.INFO.AGENTFLOW.*", "$JS.API.CONSUMER.DELETE.AGENTFLOW.*"],
        subscribe: ["_INBOX.agentflow.team-a.>"]}}
    ]
  }
}
"""


async def test_a_tenant_reads_its_namespace_and_nothing_else(db: Database) -> None:
    """The permissions the README gives a tenant: its namespace's subjects, through consumers filtered on them."""
    with running_nats(config=TENANTS) as server:
        url = server.url.replace("nats://", "nats://operator:op@")
        mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
        await append_run(db, mine, run_events(2), namespace="team-a", workflow="report")
        await append_run(db, theirs, run_events(2), namespace="team-b", workflow="report")

        async def sink() -> EventSink:
            return await JetStream.connect(ConnectSettings((url,), request_timeout=2.0))

        pub = OutboxPublisher(db.outbox, sink, STREAM, EventMetrics())
        try:
            await drain_until_empty(pub)
        finally:
            await pub.close()
        tenant_url = server.url.replace("nats://", "nats://team-a:ta@")
        tenant = await JetStream.connect(ConnectSettings((tenant_url,), request_timeout=2.0,
                                                         inbox_prefix="_INBOX.agentflow.team-a"))
        try:
            got = [decode(body) async for _, body in tenant.read("AGENTFLOW", "agentflow.team-a.*.*")]
            assert {e.run for e in got} == {mine} and len(got) == 7 + 2  # its records and two transitions
            for subject in ("agentflow.team-b.*.*", "agentflow.*.*.*"):
                with pytest.raises(PermissionDenied, match="permissions violation"):
                    async for _ in tenant.read("AGENTFLOW", subject):
                        pass
        finally:
            await tenant.close()
        # a tenant that tries another tenant's inbox is refused as well
        with pytest.raises(PermissionDenied):
            snoop = await JetStream.connect(ConnectSettings((tenant_url,), request_timeout=1.0,
                                                            inbox_prefix="_INBOX.agentflow.team-b"))
            try:
                async for _ in snoop.read("AGENTFLOW", "agentflow.team-a.*.*"):
                    pass
            finally:
                await snoop.close()


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll until ``predicate()`` holds; AssertionError after ``timeout`` (a deadline, not a measurement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.05)


# -- agentflow events


async def published_runs(db: Database, server: NatsServer) -> dict[str, list[Record]]:
    runs = {("team-a", "report"): str(uuid.uuid4()), ("team-a", "other"): str(uuid.uuid4()),
            ("team-b", "report"): str(uuid.uuid4())}
    journals = {uid: await append_run(db, uid, run_events(2), namespace=ns, workflow=wf)
                for (ns, wf), uid in runs.items()}
    pub = publisher(db, server)
    try:
        await drain_until_empty(pub)
    finally:
        await pub.close()
    return {f"{ns}/{wf}": journals[uid] for (ns, wf), uid in runs.items()}


def command(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "events", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})


async def test_agentflow_events_reads_the_stream_by_namespace_and_workflow(db: Database,
                                                                           nats_server: NatsServer) -> None:
    journals = await published_runs(db, nats_server)
    out = await asyncio.to_thread(command, "--nats-url", nats_server.url, "-n", "team-a", "--json")
    assert out.returncode == 0, out.stderr
    bodies = [json.loads(line) for line in out.stdout.splitlines()]
    assert {(b["namespace"], b["workflow"]) for b in bodies} == {("team-a", "report"), ("team-a", "other")}
    records = [b["record"] for b in bodies if b["kind"] == "journal" and b["workflow"] == "report"]
    assert records == [r.to_dict() for r in journals["team-a/report"]]
    assert len(bodies) == 2 * (len(journals["team-a/report"]) + 2)
    text = await asyncio.to_thread(command, "--nats-url", nats_server.url, "-n", "team-b", "report")
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and len(lines) == len(journals["team-b/report"]) + 2
    assert lines[0].split("  ")[1] == "team-b/report" and "PhaseChanged  -  - -> Running" in text.stdout
    since = await asyncio.to_thread(command, "--nats-url", nats_server.url, "--since", "2999-01-01T00:00:00Z")
    assert since.returncode == 0 and since.stdout == ""
    missing = await asyncio.to_thread(command, "--nats-url", nats_server.url, "--stream", "NOPE")
    assert missing.returncode == 1 and "NOPE" in missing.stderr


async def test_agentflow_events_follows_through_a_nats_restart(db: Database, nats_server: NatsServer) -> None:
    await published_runs(db, nats_server)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentflow.cli", "events", "--nats-url", nats_server.url, "-n", "team-a", "report",
        "--follow", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})
    assert proc.stdout is not None
    try:
        seen = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)) for _ in range(9)]
        assert {b["workflow"] for b in seen} == {"report"}
        nats_server.kill()
        nats_server.start()
        later = str(uuid.uuid4())
        journal = await append_run(db, later, run_events(1), namespace="team-a", workflow="report")
        pub = publisher(db, nats_server)
        try:
            await drain_until_empty(pub)
        finally:
            await pub.close()
        more = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)) for _ in range(len(journal) + 2)]
        assert [b["record"] for b in more if b["kind"] == "journal"] == [r.to_dict() for r in journal]
    finally:
        proc.terminate()
        await proc.wait()
