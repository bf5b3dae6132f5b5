"""The events publisher in a process of its own: what `agentflow operator --nats-url` runs by default.

Publishing costs CPU for every event (claim the outbox rows, build each message, wait for each JetStream ack, mark
and delete the rows). On the reconciler's event loop that work delays the next reconcile: `bench/operator_bench.py
--traces compare` measured +19.7 % on the step-to-step p50 with the publisher on the loop, +3.3 % with the outbox
written but not drained. So the operator starts the publisher (agentflow.events.publisher.OutboxPublisher,
unchanged: the same outbox lease, order and exactly-once rules) in a child process with its own PostgreSQL pool (two
connections) and NATS connection, on the other core: `python -m agentflow.events.child` (about 45 MB RSS: it imports
the publisher, asyncpg and nats-py, not kopf or the Kubernetes client), its configuration pickled down its stdin::

    publisher = PublisherProcess(dsn, events, EventMetrics(registry))
    task = asyncio.create_task(publisher.run(stopped))      # starts the child, and again if it dies
    publisher.poke()                                         # an append wrote outbox rows: one byte down a pipe

Between the two processes:

* the wake pipe (operator → child): one byte per poke, written without blocking (a full pipe already wakes it);
  end of file (the operator stopped, or died) stops the child after its round (a round cut short is published
  again by the next publisher: JetStream drops the copies by Nats-Msg-Id);
* the reports pipe (child → operator): the publisher's metrics (events published, duplicates, errors, pending, lag)
  at most twice a second, added to the operator's own ``agentflow_events_*`` series: /metrics stays the operator's.

A child that exits is started again (1 s, doubling to 30 s; its exit code logged). Its log lines go to the
operator's stderr. ``--events-publisher loop`` keeps the publisher on the operator's event loop (one process,
about 45 MB less memory, the latency above).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import sys
import time
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry, Counter, Gauge

import agentflow

from .publisher import Backoff, EventMetrics, PublisherSettings
from .settings import EventSettings

__all__ = [
    "LOG_FORMAT", "REPORT_EVERY", "ChildConfig", "ChildStart", "PublisherProcess", "Snapshot", "apply_snapshot",
    "child_environment", "snapshot_of",
]

log = logging.getLogger("agentflow.events")

Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""The publisher's metrics: (sample name, labels) → value (counters as their ``_total`` samples)."""

REPORT_EVERY = 0.5
"""Seconds between two metric reports of the child (only when something changed)."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def snapshot_of(registry: CollectorRegistry) -> Snapshot:
    """Every counter and gauge sample of ``registry`` (the child's EventMetrics)."""
    out: Snapshot = {}
    for family in registry.collect():
        for sample in family.samples:
            if family.type == "gauge" or (family.type == "counter" and sample.name.endswith("_total")):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def apply_snapshot(metrics: EventMetrics, snapshot: Snapshot, last: Snapshot) -> None:
    """Bring the operator's ``metrics`` up to a child's ``snapshot``: counters grow by what the child counted since
    ``last`` (its previous report; empty for a new child, whose counters start at 0), gauges take its value."""
    counters: dict[str, Counter] = {}
    gauges: dict[str, Gauge] = {}
    for counter in (metrics.published, metrics.duplicates, metrics.errors):
        counters.update({family.name + "_total": counter for family in counter.describe()})
    for gauge in (metrics.pending, metrics.lag):
        gauges.update({family.name: gauge for family in gauge.describe()})
    for (name, labels), value in snapshot.items():
        if name in gauges:
            gauge = gauges[name]
            (gauge.labels(**dict(labels)) if labels else gauge).set(value)
        elif name in counters and (delta := value - last.get((name, labels), 0.0)) > 0:
            counter = counters[name]
            (counter.labels(**dict(labels)) if labels else counter).inc(delta)


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """What the child needs (pickled down its stdin: the DSN never appears on a command line)."""

    dsn: str
    events: EventSettings
    publisher: PublisherSettings
    log_level: int


@dataclasses.dataclass(frozen=True)
class ChildStart:
    """What the operator writes to a new child's stdin: its configuration and its ends of the two pipes."""

    config: ChildConfig
    wake_fd: int
    reports_fd: int


class PublisherProcess:
    def __init__(self, dsn: str, events: EventSettings, metrics: EventMetrics,
                 settings: PublisherSettings | None = None, *, log_level: int | None = None,
                 restart_initial: float = 1.0, restart_max: float = 30.0, stop_timeout: float = 10.0) -> None:
        self.config = ChildConfig(dsn, events, settings or PublisherSettings(),
                                  log_level if log_level is not None else logging.getLogger().getEffectiveLevel())
        self.metrics = metrics
        self.restart = Backoff(restart_initial, restart_max)
        self.stop_timeout = stop_timeout
        self.starts = 0
        self.process: asyncio.subprocess.Process | None = None  # while a child runs
        self._wake_fd: int | None = None

    def poke(self) -> None:
        """Wake the child (never blocks: a full pipe means it has a wake-up waiting already)."""
        fd = self._wake_fd
        if fd is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(fd, b"w")

    async def run(self, stopped: asyncio.Event) -> None:
        """Run the child until ``stopped``; start it again when it exits."""
        while not stopped.is_set():
            began = time.monotonic()
            try:
                code: int | str | None = await self._run_child(stopped)
            except OSError as exc:  # it could not be started (no memory, no processes left)
                code = f"not started: {exc}"
            if stopped.is_set():
                return
            if time.monotonic() - began > 60:
                self.restart.reset()
            delay = self.restart.next()
            log.warning("the events publisher process exited (exit code %s); starting it again in %.0fs", code,
                        delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), delay)

    async def _run_child(self, stopped: asyncio.Event) -> int | None:
        wake_r, wake_w = os.pipe()
        reports_r_fd, reports_w = os.pipe()
        reports_r = Connection(reports_r_fd, writable=False)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agentflow.events.child", stdin=asyncio.subprocess.PIPE,
                pass_fds=(wake_r, reports_w), env=child_environment())
        except BaseException:
            os.close(wake_w)
            reports_r.close()
            raise
        finally:  # the child has its own copies of its ends
            os.close(wake_r)
            os.close(reports_w)
        self.process = process
        self.starts += 1
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):  # a child that died at once: its exit code tells
            process.stdin.write(pickle.dumps(ChildStart(self.config, wake_r, reports_w)))
            await process.stdin.drain()
        process.stdin.close()
        os.set_blocking(wake_w, False)
        self._wake_fd = wake_w
        self.poke()  # what the outbox holds already
        loop = asyncio.get_running_loop()
        last: Snapshot = {}

        def on_report() -> None:
            nonlocal last
            try:
                while reports_r.poll():
                    snapshot = reports_r.recv()
                    apply_snapshot(self.metrics, snapshot, last)
                    last = snapshot
            except (EOFError, OSError):
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(reports_r.fileno())

        loop.add_reader(reports_r.fileno(), on_report)
        stopping = asyncio.ensure_future(stopped.wait())
        ending = asyncio.ensure_future(process.wait())
        try:
            await asyncio.wait([stopping, ending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            self._wake_fd = None
            os.close(wake_w)  # end of file: the child finishes its round and exits
            if not ending.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ending), self.stop_timeout)
            if not ending.done():
                log.warning("the events publisher process did not stop within %.0fs; killed", self.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ending, 5)
            on_report()  # its last report
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(reports_r.fileno())
            reports_r.close()
            self.process = None
        return process.returncode

    async def close(self) -> None:
        """A child still running (``run`` was cancelled) is killed."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)


def child_environment() -> dict[str, str]:
    """The operator's environment, with the directory holding the agentflow package first on PYTHONPATH (so the
    child imports the same code however the operator was started)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(agentflow.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
