"""Results stored by any replica, heard by every one: PostgreSQL LISTEN on the store's RESULTS_CHANNEL.

With ``--shards auto`` a step pod may post its result to a replica that does not drive its run (a Service in front
of the replicas as the callback URL, or the run moved since the pod was made). That replica stores it
(PostgresStore.put_result, ``notify_results``: a NOTIFY with the run uid once the row is in) and every replica's
:class:`ResultNotices` hears it and pokes the run, so its owner moves on at once rather than at the pod's
Succeeded event::

    ResultNotices.run(stopped)   one pooled connection held with LISTEN; on_result(run_uid) per notification;
                                 a lost connection is listened again after a backoff (1 s doubling to 30 s)

A notification is a hint, never the record: a missed one (the connection away) only delays the run to its next
wake-up, since the reconcile reads the results from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from .postgres import _THIRD_PARTY, RESULTS_CHANNEL

__all__ = ["ResultNotices"]

log = logging.getLogger("agentflow.storage.notices")

MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


class ResultNotices:
    def __init__(self, pool: asyncpg.Pool, *, where: str = "the configured DSN") -> None:
        self._pool = pool
        self._where = where

    async def run(self, stopped: asyncio.Event, on_result: Callable[[str], None]) -> None:
        """LISTEN until ``stopped``, calling ``on_result(run_uid)`` for each notification."""
        delay = MIN_BACKOFF_SECONDS

        def notified(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            on_result(str(payload))

        while not stopped.is_set():
            lost = asyncio.Event()

            def terminated(_conn: Any, lost: asyncio.Event = lost) -> None:
                lost.set()

            try:
                async with self._pool.acquire() as conn:
                    conn.add_termination_listener(terminated)
                    try:
                        await conn.add_listener(RESULTS_CHANNEL, notified)
                        delay = MIN_BACKOFF_SECONDS
                        await _first(stopped.wait(), lost.wait())
                        if not lost.is_set():  # the pool's reset on release UNLISTENs too
                            with contextlib.suppress(*_THIRD_PARTY):
                                await conn.remove_listener(RESULTS_CHANNEL, notified)
                    finally:  # a pooled connection keeps termination listeners across releases
                        conn.remove_termination_listener(terminated)
            except _THIRD_PARTY as exc:
                log.warning("results from other replicas not heard (%s: %s); listening again in %.0fs",
                            self._where, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            if lost.is_set() and not stopped.is_set():
                log.warning("results from other replicas: the listening connection to %s was lost; listening again "
                            "in %.0fs", self._where, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)


async def _first(*waits: Any) -> None:
    """Until the first of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
