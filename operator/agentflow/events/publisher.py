"""The events publisher: drains the PostgreSQL outbox to NATS JetStream, in order, never twice at once.

    publisher = OutboxPublisher(db.outbox, connect, StreamSettings(), EventMetrics(registry))
    task = asyncio.create_task(publisher.run(stopped))     # every replica may run one
    publisher.poke()                                        # something was appended: drain now

A poke starts a round ``linger`` (0.1 s) later, gathering the appends made meanwhile; a round that took a full
batch is followed by the next at once. One round (:meth:`OutboxPublisher.drain`): claim the oldest rows under the
outbox lease (only one replica publishes at a time; see agentflow.storage.outbox), publish each run's rows one
after the other in sequence order, waiting for each ack (runs side by side, up to ``concurrency``), mark each acked
row, and delete them when the round ends. The first failure of a run stops that run for the round (its later rows
wait, so the stream never holds a run's record after a gap); the other runs go on.

NATS down or slow never blocks a run: the reconciler only writes the outbox (in its journal transaction);
this loop backs off (``backoff_initial`` doubling to ``backoff_max``) and catches up from the outbox when NATS
is back. The lag is exported as ``agentflow_events_pending`` and ``agentflow_events_lag_seconds``.

Exactly once on the stream: a row is published again only when the round that published it did not commit
(the process died, PostgreSQL went away): JetStream drops the copy by its Nats-Msg-Id (``run:seq``) when it
comes within the stream's duplicate window (``--events-duplicate-window``, 10 minutes by default), which
``agentflow_events_duplicates_total`` counts. A copy published later than that is stored twice: consumers
that must never see one twice skip a Nats-Msg-Id they have seen (it is also ``run`` and ``record.seq`` in
the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..storage.errors import StorageError
from ..storage.outbox import Claim, OutboxRow, OutboxStats
from .errors import EventsError, PermissionDenied, StreamMissing
from .settings import StreamSettings
from .subjects import SubjectError
from .wire import EventMessage, WireError, journal_message, phase_message

__all__ = ["Backoff", "EventMetrics", "EventSink", "Outbox", "OutboxPublisher", "PublisherSettings", "message_of"]

log = logging.getLogger("agentflow.events")


class EventSink(Protocol):
    """Where events go: agentflow.events.jetstream.JetStream (agentflow.testing.MemoryStream in unit tests)."""

    async def ensure_stream(self, stream: StreamSettings) -> list[str]: ...
    async def publish(self, message: EventMessage, stream: str) -> bool: ...
    async def close(self) -> None: ...


class Outbox(Protocol):
    """agentflow.storage.outbox.PostgresOutbox."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[Claim | None]: ...
    async def stats(self) -> OutboxStats: ...


Connector = Callable[[], Awaitable[EventSink]]


class EventMetrics:
    """The publisher's Prometheus metrics, on a registry passed in::

        agentflow_events_published_total{kind}          events stored by JetStream (journal | phase)
        agentflow_events_duplicates_total               copies JetStream dropped by Nats-Msg-Id (a republish)
        agentflow_events_publish_errors_total{reason}   unavailable | stream_missing | permission | refused | invalid
        agentflow_events_pending                        events in the outbox not yet published
        agentflow_events_lag_seconds                    age of the oldest of them (0: none)
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.published = Counter("agentflow_events_published", "Events stored by JetStream", ["kind"], registry=r)
        self.duplicates = Counter("agentflow_events_duplicates",
                                  "Events published again that JetStream dropped by their Nats-Msg-Id", registry=r)
        self.errors = Counter("agentflow_events_publish_errors", "Failed attempts to publish an event",
                              ["reason"], registry=r)
        self.pending = Gauge("agentflow_events_pending", "Events in the outbox not yet published", registry=r)
        self.lag = Gauge("agentflow_events_lag_seconds", "Age of the oldest event not yet published", registry=r)

    def failed(self, exc: EventsError) -> None:
        if isinstance(exc, StreamMissing):
            reason = "stream_missing"
        elif isinstance(exc, PermissionDenied):
            reason = "permission"
        elif type(exc).__name__ == "EventsUnavailable":
            reason = "unavailable"
        else:
            reason = "refused"
        self.errors.labels(reason).inc()


@dataclasses.dataclass(frozen=True)
class PublisherSettings:
    batch: int = 500
    """Most outbox rows claimed per round."""
    concurrency: int = 32
    """Runs published side by side in a round (each run's rows one after the other)."""
    idle: float = 1.0
    """Seconds between rounds when there was nothing to do (a poke starts one sooner)."""
    linger: float = 0.1
    """Seconds a poke waits before its round starts, so that the appends of one reconcile, and of the runs
    reconciled meanwhile, go out in one round: rounds stay few under load and happen after the reconcile that
    poked has made its next request (the event latency this adds is at most this)."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stats_every: float = 2.0
    """Seconds between two readings of the outbox lag."""


class Backoff:
    """Capped exponential backoff (pure): ``next()`` the delay to wait, ``reset()`` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff: initial must be > 0 and maximum >= initial")
        self.initial, self.maximum = initial, maximum
        self._next = initial

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial

    @property
    def idle(self) -> bool:
        """No failure since the last reset."""
        return self._next == self.initial


def message_of(row: OutboxRow) -> EventMessage:
    """The NATS message of an outbox row; SubjectError or WireError when it cannot make one."""
    if row.kind == "journal":
        return journal_message(row.run_uid, row.namespace, row.workflow, row.seq, row.type, row.body, row.traceparent)
    if row.kind == "phase":
        body = orjson.loads(row.body)
        return phase_message(row.run_uid, row.namespace, row.workflow, row.seq, body.get("from"), str(body["to"]),
                             float(body["at"]), row.traceparent)
    raise WireError(f"outbox row {row.id}: unknown kind {row.kind!r}")


@dataclasses.dataclass
class Round:
    """What one round did."""

    leased: bool = False
    claimed: int = 0
    published: int = 0
    failures: list[EventsError] = dataclasses.field(default_factory=list)

    batch: int = 0

    @property
    def full(self) -> bool:
        """The round took as many rows as it may: more are likely waiting (the next round starts at once)."""
        return self.leased and not self.failures and self.claimed >= self.batch > 0


_KIND_ORDER = {"journal": 0, "phase": 1}


class OutboxPublisher:
    def __init__(self, outbox: Outbox, connect: Connector, stream: StreamSettings, metrics: EventMetrics,
                 settings: PublisherSettings | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.outbox = outbox
        self.connect = connect
        self.stream = stream
        self.metrics = metrics
        self.settings = settings or PublisherSettings()
        self.clock = clock
        self._sink: EventSink | None = None
        self._ensured = False
        self._poked = asyncio.Event()
        self._stats_at: float | None = None

    def poke(self) -> None:
        """Start a round now (something was appended)."""
        self._poked.set()

    async def _ready_sink(self) -> EventSink:
        if self._sink is None:
            self._sink = await self.connect()
            self._ensured = False
        if not self._ensured:
            await self._sink.ensure_stream(self.stream)
            self._ensured = True
        return self._sink

    async def drain(self) -> Round:
        """One round: claim, publish in order, mark. EventsError when NATS cannot be used at all (nothing
        claimed then), StorageError when PostgreSQL fails (nothing marked: it is published again)."""
        sink = await self._ready_sink()
        result = Round(batch=self.settings.batch)
        async with self.outbox.claim(self.settings.batch) as claim:
            if claim is None:
                return result
            result.leased, result.claimed = True, len(claim.rows)
            runs: dict[str, list[OutboxRow]] = {}
            for row in claim.rows:
                runs.setdefault(row.run_uid, []).append(row)
            gate = asyncio.Semaphore(self.settings.concurrency)

            async def publish_run(rows: list[OutboxRow]) -> None:
                async with gate:
                    for row in sorted(rows, key=lambda r: (r.seq, _KIND_ORDER.get(r.kind, 2))):
                        try:
                            message = message_of(row)
                        except (SubjectError, WireError, ValueError, KeyError) as exc:
                            # It can never be published (Kubernetes names always make subjects): said loudly and
                            # dropped, rather than holding back every later event of the run forever.
                            log.error("dropping outbox row %s (run %s, seq %s, %s): %s", row.id, row.run_uid,
                                      row.seq, row.kind, exc)
                            self.metrics.errors.labels("invalid").inc()
                            claim.done(row.id)
                            continue
                        try:
                            stored = await sink.publish(message, self.stream.name)
                        except EventsError as exc:
                            result.failures.append(exc)
                            self.metrics.failed(exc)
                            return
                        claim.done(row.id)
                        result.published += 1
                        if stored:
                            self.metrics.published.labels(row.kind).inc()
                        else:
                            self.metrics.duplicates.inc()

            await asyncio.gather(*(publish_run(rows) for rows in runs.values()))
        if any(isinstance(f, StreamMissing) for f in result.failures):
            self._ensured = False
        return result

    async def refresh_stats(self, force: bool = False) -> None:
        now = self.clock()
        if not force and self._stats_at is not None and now - self._stats_at < self.settings.stats_every:
            return
        self._stats_at = now
        stats = await self.outbox.stats()
        self.metrics.pending.set(stats.pending)
        self.metrics.lag.set(stats.oldest_seconds)

    async def run(self, stopped: asyncio.Event) -> None:
        """Rounds until ``stopped`` is set; never raises for NATS or PostgreSQL trouble (it backs off)."""
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while not stopped.is_set():
            self._poked.clear()
            delay: float | None = None
            try:
                result = await self.drain()
                if result.failures:
                    delay = backoff.next()
                    log.warning("publishing events failed (%d published this round); retrying in %.1fs: %s",
                                result.published, delay, result.failures[0])
                else:
                    backoff.reset()
                    if not result.full:
                        delay = self.settings.idle
            except EventsError as exc:
                self.metrics.failed(exc)
                if isinstance(exc, StreamMissing):
                    self._ensured = False
                delay = backoff.next()
                log.warning("events cannot be published now; retrying in %.1fs: %s", delay, exc)
            except StorageError as exc:
                delay = backoff.next()
                log.warning("the events outbox cannot be read now; retrying in %.1fs: %s", delay, exc)
            try:
                await self.refresh_stats()
            except StorageError as exc:
                log.debug("could not read the outbox lag: %s", exc)
            if delay:
                # While backing off, appends do not cut the wait short (each would try a NATS that is away).
                await self._wait(stopped, delay, pokes=backoff.idle)

    async def _wait(self, stopped: asyncio.Event, seconds: float, *, pokes: bool) -> None:
        """Until ``stopped``, ``seconds`` have passed or (``pokes``) a poke."""
        waiters = [asyncio.ensure_future(stopped.wait())]
        if pokes:
            waiters.append(asyncio.ensure_future(self._poked.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            if self._poked.is_set() and not stopped.is_set() and self.settings.linger > 0:
                await asyncio.wait([waiters[0]], timeout=self.settings.linger)
        finally:
            for w in waiters:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    async def close(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            await sink.close()
