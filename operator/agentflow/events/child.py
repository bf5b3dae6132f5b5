"""The events publisher's child process (`python -m agentflow.events.child`), started by
agentflow.events.process.PublisherProcess.

It reads a pickled ChildStart from its stdin (the DSN never appears on a command line or in the environment),
runs the OutboxPublisher with its own PostgreSQL pool and NATS connection until the wake pipe ends (the operator
stopped or died) or SIGTERM, and reports its metrics down the reports pipe. It imports only what publishing needs:
not the operator, kopf or the Kubernetes client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sys
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry

from .process import LOG_FORMAT, REPORT_EVERY, ChildConfig, ChildStart, snapshot_of
from .publisher import EventMetrics, OutboxPublisher

__all__ = ["main"]


def main() -> None:
    start = pickle.load(sys.stdin.buffer)
    if not isinstance(start, ChildStart):
        raise SystemExit(f"agentflow.events.child: stdin held {type(start).__name__}, not a ChildStart")
    wake, reports = Connection(start.wake_fd, writable=False), Connection(start.reports_fd, readable=False)
    child_main(start.config, wake, reports)


def child_main(config: ChildConfig, wake: Connection, reports: Connection) -> None:
    """The child process: the publisher until the wake pipe ends (or SIGTERM)."""
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT)
    # Ctrl-C in a terminal reaches the whole process group: the operator stops the child itself (end of file).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_child(config, wake, reports))


async def _child(config: ChildConfig, wake: Connection, reports: Connection) -> None:
    from ..storage.database import Database
    from .jetstream import JetStream  # nats-py: only in the process that publishes

    registry = CollectorRegistry()
    metrics = EventMetrics(registry)
    stopped = asyncio.Event()
    db = await Database.connect(config.dsn, application_name="agentflow-events", min_size=1, max_size=2)
    try:
        publisher = OutboxPublisher(db.outbox, lambda: JetStream.connect(config.events.connect),
                                    config.events.stream, metrics, config.publisher)
        loop = asyncio.get_running_loop()

        def on_wake() -> None:
            try:
                data = os.read(wake.fileno(), 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                publisher.poke()
            else:
                loop.remove_reader(wake.fileno())
                stopped.set()

        loop.add_reader(wake.fileno(), on_wake)
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        reporter = asyncio.create_task(_report(registry, reports, stopped))
        try:
            await publisher.run(stopped)
        finally:
            stopped.set()
            await reporter
            await publisher.close()
    finally:
        await db.close()


async def _report(registry: CollectorRegistry, reports: Connection, stopped: asyncio.Event) -> None:
    """Send the metrics when they changed, every REPORT_EVERY seconds and once more at the end."""
    sent: Mapping[Any, float] = {}
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), REPORT_EVERY)
        snapshot = snapshot_of(registry)
        if snapshot != sent:
            try:
                reports.send(snapshot)
            except (BrokenPipeError, OSError):
                return
            sent = snapshot
        if stopped.is_set():
            return


if __name__ == "__main__":
    main()
