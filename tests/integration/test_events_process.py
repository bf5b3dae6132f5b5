"""The events publisher in its own process (agentflow.events.process) with a real PostgreSQL and nats-server: the
operator's pokes reach it, the stream gets every record once in order, its metrics show on the operator's registry,
a child that dies is started again and publishes the rest, and stopping ends it."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from agentflow.events.process import PublisherProcess, apply_snapshot, child_environment, snapshot_of
from agentflow.events.publisher import EventMetrics, PublisherSettings
from agentflow.events.settings import ConnectSettings, EventSettings
from agentflow.events.wire import decode
from agentflow.storage.database import Database
from services.nats import NatsServer, running_nats

from .test_events import STREAM, append_run, run_events, stream_messages

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(own_dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(own_dsn, outbox=True)
    try:
        await database.migrate()
        yield database
    finally:
        await database.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


async def until(what: str, pred: Callable[[], bool], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def start(own_dsn: str, server: NatsServer, registry: CollectorRegistry) -> PublisherProcess:
    events = EventSettings(ConnectSettings((server.url,), request_timeout=2.0, connect_timeout=2.0,
                                           reconnect_wait=0.2), STREAM)
    return PublisherProcess(own_dsn, events, EventMetrics(registry),
                            PublisherSettings(idle=5.0, linger=0.01, stats_every=0.0, backoff_initial=0.05),
                            restart_initial=0.1)


async def test_a_child_process_publishes_what_the_operator_appends_and_is_started_again_when_it_dies(
        db: Database, own_dsn: str) -> None:
    registry = CollectorRegistry()
    stopped = asyncio.Event()
    with running_nats() as server:
        proc = start(own_dsn, server, registry)
        db.store.on_outbox = proc.poke
        task = asyncio.create_task(proc.run(stopped))
        try:
            await until("the child to start", lambda: proc.process is not None)
            first = await append_run(db, uid := str(uuid.uuid4()), run_events(4))
            # idle is 5 s: only the poke down the pipe makes it publish this soon
            await until("the first run on the stream",
                        lambda: value(registry, "agentflow_events_published_total", kind="journal") == len(first),
                        timeout=4)
            assert proc.process is not None and proc.process.pid != os.getpid()

            os.kill(proc.process.pid, signal.SIGKILL)
            await until("a new child", lambda: proc.starts == 2 and proc.process is not None)
            second = await append_run(db, uid2 := str(uuid.uuid4()), run_events(2), namespace="team-b")
            await until("the second run on the stream", lambda: value(
                registry, "agentflow_events_published_total", kind="journal") == len(first) + len(second))
            await until("the lag metric", lambda: registry.get_sample_value("agentflow_events_pending") == 0)
        finally:
            stopped.set()
            await asyncio.wait_for(task, 30)
        assert proc.process is None
        bodies = [decode(m.data) for m in await stream_messages(server)]
        for run, records in ((uid, first), (uid2, second)):
            seqs = [b.seq for b in bodies if b.run == run and b.kind == "journal"]
            assert seqs == [r.seq for r in records], "every record once, in order"
        assert value(registry, "agentflow_events_published_total", kind="phase") == 4  # None→Running→Succeeded ×2


async def test_stopping_ends_the_child_and_pokes_after_it_are_harmless(own_dsn: str) -> None:
    registry = CollectorRegistry()
    stopped = asyncio.Event()
    with running_nats() as server:
        proc = start(own_dsn, server, registry)
        task = asyncio.create_task(proc.run(stopped))
        await until("the child to start", lambda: proc.process is not None)
        child = proc.process
        for _ in range(100_000):  # a full pipe never blocks the operator
            proc.poke()
        stopped.set()
        await asyncio.wait_for(task, 30)
        assert child is not None and child.returncode == 0
        proc.poke()
        await proc.close()


def test_the_operator_counts_what_each_child_counted_once() -> None:
    child = EventMetrics(CollectorRegistry())
    registry = CollectorRegistry()
    operator = EventMetrics(registry)
    child.published.labels("journal").inc(3)
    child.errors.labels("unavailable").inc()
    child.pending.set(7)
    first = snapshot_of(child.registry)
    apply_snapshot(operator, first, {})
    child.published.labels("journal").inc(2)
    child.pending.set(0)
    second = snapshot_of(child.registry)
    apply_snapshot(operator, second, first)
    assert value(registry, "agentflow_events_published_total", kind="journal") == 5
    assert value(registry, "agentflow_events_publish_errors_total", reason="unavailable") == 1
    assert registry.get_sample_value("agentflow_events_pending") == 0
    # a new child starts from zero: what it counts is added to what the operator shows
    fresh = EventMetrics(CollectorRegistry())
    fresh.published.labels("journal").inc(1)
    apply_snapshot(operator, snapshot_of(fresh.registry), {})
    assert value(registry, "agentflow_events_published_total", kind="journal") == 6


async def test_the_child_imports_neither_kopf_nor_the_kubernetes_client_and_refuses_stray_input() -> None:
    # What keeps it small (about 44 MB RSS, not the operator's CLI re-imported): the modules it loads.
    probe = ("import sys; import agentflow.events.child, agentflow.storage.database, "
             "agentflow.events.jetstream; print(sorted({m.split('.')[0] for m in sys.modules}))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", probe, stdout=asyncio.subprocess.PIPE,
                                                env=child_environment())
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for heavy in ("kopf", "kubernetes", "opentelemetry", "litellm", "celpy", "pendulum"):
        assert f"'{heavy}'" not in out.decode(), heavy
    # Anything but a ChildStart on its stdin: a clear exit, not a traceback or a hang.
    bad = await asyncio.create_subprocess_exec(sys.executable, "-m", "agentflow.events.child",
                                               stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                               env=child_environment())
    _, err = await asyncio.wait_for(bad.communicate(pickle.dumps({"dsn": "x"})), 30)
    assert bad.returncode == 1 and b"stdin held dict, not a ChildStart" in err
