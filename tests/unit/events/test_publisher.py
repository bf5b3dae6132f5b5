"""The publisher's rounds, with the shipped fakes (agentflow.testing.MemoryOutbox, MemoryStream); the real outbox and
nats-server are in tests/integration/test_events.py."""

from __future__ import annotations

import argparse
import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.events.errors import EventsUnavailable, StreamMissing
from agentflow.events.publisher import Backoff, EventMetrics, EventSink, OutboxPublisher, PublisherSettings
from agentflow.events.settings import StreamSettings, add_events_arguments, events_settings, parse_duration
from agentflow.events.wire import decode
from agentflow.storage.outbox import OutboxRow
from agentflow.testing import MemoryOutbox, MemoryStream

_ids = iter(range(1, 1_000_000))


def rows(run: str, n: int, namespace: str = "team-a", workflow: str = "wf") -> list[OutboxRow]:
    records = Journal().extend([Event(EventType.step_started, f"s{i}", {"attempt": 1}, float(i)) for i in range(n)])
    out = [OutboxRow(next(_ids), run, r.seq, "journal", namespace, workflow, r.event.type.value, r.to_json(), None,
                     0.0) for r in records]
    out.append(OutboxRow(next(_ids), run, n - 1, "phase", namespace, workflow, "PhaseChanged",
                         orjson.dumps({"from": None, "to": "Running", "at": 1.0}), None, 0.0))
    return out


def make(outbox: MemoryOutbox, stream: MemoryStream, **settings: float) -> tuple[OutboxPublisher, CollectorRegistry]:
    registry = CollectorRegistry()

    async def connect() -> EventSink:
        return stream

    return OutboxPublisher(outbox, connect, StreamSettings(), EventMetrics(registry),
                           PublisherSettings(**settings)), registry  # type: ignore[arg-type]


def published(stream: MemoryStream, run: str) -> list[tuple[int, str]]:
    return [(m.seq, m.kind) for m in stream.messages if m.run_uid == run]


async def test_each_run_in_order_the_transition_after_its_record() -> None:
    outbox, stream = MemoryOutbox(), MemoryStream()
    a, b = rows("a", 3), rows("b", 2)
    outbox.add(*[x for pair in zip(a, b, strict=False) for x in pair], *a[len(b):])  # interleaved ids
    pub, registry = make(outbox, stream)
    result = await pub.drain()
    assert result.leased and result.claimed == 7 and result.published == 7 and not result.failures
    assert published(stream, "a") == [(0, "journal"), (1, "journal"), (2, "journal"), (2, "phase")]
    assert published(stream, "b") == [(0, "journal"), (1, "journal"), (1, "phase")]
    assert outbox.rows == [] and [s.name for s in stream.streams] == ["AGENTFLOW"]
    assert registry.get_sample_value("agentflow_events_published_total", {"kind": "journal"}) == 5
    assert decode(stream.messages[0].body).record is not None


async def test_a_failure_stops_that_run_only_and_its_later_rows_wait() -> None:
    outbox, stream = MemoryOutbox(), MemoryStream()
    outbox.add(*rows("a", 5))
    pub, registry = make(outbox, stream, concurrency=1)
    stream.fail, stream.fail_after = EventsUnavailable("nats away"), 2
    result = await pub.drain()
    assert result.published == 2 and len(result.failures) == 1
    assert published(stream, "a") == [(0, "journal"), (1, "journal")]
    assert [(r.seq, r.kind) for r in outbox.rows] == [(2, "journal"), (3, "journal"), (4, "journal"), (4, "phase")]
    assert registry.get_sample_value("agentflow_events_publish_errors_total", {"reason": "unavailable"}) == 1
    stream.fail = None
    await pub.drain()
    assert [s for s, _ in published(stream, "a")] == [0, 1, 2, 3, 4, 4] and outbox.rows == []


async def test_a_republished_event_is_a_duplicate_not_a_second_message() -> None:
    outbox, stream = MemoryOutbox(), MemoryStream()
    first = rows("a", 2)
    outbox.add(*first)
    pub, registry = make(outbox, stream)
    await pub.drain()
    outbox.add(*first)  # as if the round that published them had not committed
    await pub.drain()
    assert len(stream.messages) == 3
    assert registry.get_sample_value("agentflow_events_duplicates_total") == 3


async def test_a_row_that_cannot_make_a_subject_is_dropped_loudly_not_retried_forever(
        caplog: pytest.LogCaptureFixture) -> None:
    outbox, stream = MemoryOutbox(), MemoryStream()
    outbox.add(*rows("a", 1, namespace="Not.A.Namespace"), *rows("b", 1))
    pub, registry = make(outbox, stream)
    await pub.drain()
    assert outbox.rows == [] and {m.run_uid for m in stream.messages} == {"b"}
    assert registry.get_sample_value("agentflow_events_publish_errors_total", {"reason": "invalid"}) == 2
    assert "dropping outbox row" in caplog.text and "namespace 'Not.A.Namespace'" in caplog.text


async def test_a_missing_stream_is_ensured_again_before_the_next_round() -> None:
    outbox, stream = MemoryOutbox(), MemoryStream()
    outbox.add(*rows("a", 1))
    pub, _ = make(outbox, stream)
    stream.fail = StreamMissing("no stream")
    await pub.drain()
    assert len(stream.streams) == 1
    stream.fail = None
    await pub.drain()
    assert len(stream.streams) == 2 and outbox.rows == []


async def test_run_backs_off_while_nats_is_away_then_drains_and_stops() -> None:
    outbox, stream = MemoryOutbox(), MemoryStream()
    outbox.add(*rows("a", 3))
    attempts = []

    async def connect() -> EventSink:
        attempts.append(1)
        if len(attempts) < 3:
            raise EventsUnavailable("connect: NATS is unavailable")
        return stream

    registry = CollectorRegistry()
    pub = OutboxPublisher(outbox, connect, StreamSettings(), EventMetrics(registry),
                          PublisherSettings(idle=0.01, backoff_initial=0.001, backoff_max=0.002, stats_every=0))
    stopped = asyncio.Event()
    task = asyncio.create_task(pub.run(stopped))
    for _ in range(1000):
        if not outbox.rows:
            break
        await asyncio.sleep(0.001)
    stopped.set()
    await asyncio.wait_for(task, 5)
    assert len(attempts) == 3 and len(stream.messages) == 4
    assert registry.get_sample_value("agentflow_events_publish_errors_total", {"reason": "unavailable"}) == 2
    assert registry.get_sample_value("agentflow_events_pending") == 0


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert not backoff.idle
    backoff.reset()
    assert backoff.idle and backoff.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_events_arguments(p, {})
    return p.parse_args(list(argv))


def test_events_are_off_without_a_nats_url_and_flags_are_checked() -> None:
    assert events_settings(parse()) is None
    settings = events_settings(parse("--nats-url", "nats://a:4222, nats://u:pw@b:4222", "--events-max-age", "30d",
                                     "--events-duplicate-window", "2m", "--events-replicas", "3"))
    assert settings is not None
    assert settings.connect.servers == ("nats://a:4222", "nats://u:pw@b:4222")
    assert settings.connect.shown == "nats://a:4222,nats://u:***@b:4222"
    assert (settings.stream.max_age, settings.stream.duplicate_window, settings.stream.replicas) == (
        30 * 86400, 120, 3)
    assert settings.publisher == "process"  # off the reconciler's loop unless asked (agentflow.events.process)
    looped = events_settings(parse("--nats-url", "nats://a", "--events-publisher", "loop"))
    assert looped is not None and looped.publisher == "loop"
    env = argparse.ArgumentParser()
    add_events_arguments(env, {"AGENTFLOW_EVENTS_PUBLISHER": "thread"})  # argparse does not check a default
    with pytest.raises(ValueError, match=r"^--events-publisher 'thread'"):
        events_settings(env.parse_args(["--nats-url", "nats://a"]))


@pytest.mark.parametrize(("argv", "flag"), [
    (["--nats-url", "http://a:4222"], "--nats-url"),
    (["--nats-url", "nats://"], "--nats-url"),
    (["--nats-url", "nats://a:99999"], "--nats-url"),
    (["--nats-url", "nats://a", "--events-max-age", "a week"], "--events-max-age"),
    (["--nats-url", "nats://a", "--events-duplicate-window", "0s"], "--events-duplicate-window"),
    (["--nats-url", "nats://a", "--events-duplicate-window", "8d"], "--events-duplicate-window"),
    (["--nats-url", "nats://a", "--events-stream", "a.b"], "--events-stream"),
    (["--nats-url", "nats://a", "--events-max-bytes", "0"], "--events-max-bytes"),
    (["--nats-url", "nats://a", "--events-replicas", "7"], "--events-replicas"),
])
def test_a_bad_events_flag_is_named(argv: list[str], flag: str) -> None:
    with pytest.raises(ValueError, match=f"^{flag}"):
        events_settings(parse(*argv))


def test_durations() -> None:
    assert [parse_duration(t, "x") for t in ("90", "90s", "10m", "168h", "7d", "250ms", "1.5h")] == [
        90, 90, 600, 168 * 3600, 7 * 86400, 0.25, 5400]
    with pytest.raises(ValueError, match=r"^--x '-1s'"):
        parse_duration("-1s", "--x")
