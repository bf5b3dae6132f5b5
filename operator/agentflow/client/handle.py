"""RunHandle: one run started or found by a client; waiting for it and streaming its progress, once for both
drivers.

A handle asks its client's :class:`Source` for a look at the run (:class:`~agentflow.client.runs.RunResult`) every
``poll_seconds`` and turns two looks into events with the pure :func:`~agentflow.client.runs.changes`. The cluster
source reads the Workflow (its status: what the operator wrote), the local one the run's journal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from .errors import RunFailed, Timeout
from .runs import RunEvent, RunResult, changes

__all__ = ["RunHandle", "Source"]


class Source(Protocol):
    """Where a client's runs are (a cluster's namespace, a local state directory)."""

    poll_seconds: float

    async def look(self, run: str) -> RunResult:
        """The run now; RunNotFound when there is none, ClientError when it cannot be read (or is no longer
        driven)."""
        ...

    async def cancel(self, run: str, reason: str) -> None:
        """Ask the run to stop (its exit handlers still run); ClientError when it has finished."""
        ...


class RunHandle:
    """A run: ``await handle.wait(timeout)``, ``async for event in handle.events()``, ``await handle.result()``."""

    def __init__(self, name: str, source: Source) -> None:
        self.name = name
        """The run's name: the Workflow's on a cluster, the run id locally (what ``client.get`` takes)."""
        self._source = source

    def __repr__(self) -> str:
        return f"RunHandle({self.name!r})"

    async def result(self) -> RunResult:
        """The run now (finished or not)."""
        return await self._source.look(self.name)

    async def events(self, *, timeout: float | None = None) -> AsyncIterator[RunEvent]:
        """Its progress until it finishes: the first look's state (each step seen, then the run's phase), then every
        change of a step's or the run's phase; the last event is the run's finished phase (its ``result`` holds
        outputs and cost). ``timeout``: Timeout when it has not finished by then (the run goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        before: RunResult | None = None
        while True:
            now = await self._source.look(self.name)
            for event in changes(before, now):
                yield event
            before = now
            if now.finished:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(now, timeout or 0.0)
            pause = self._source.poll_seconds
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    async def wait(self, timeout: float | None = None) -> RunResult:
        """The finished run when it Succeeded; RunFailed (the failing step and its message) when it ended Failed or
        Cancelled; Timeout when it has not finished within ``timeout`` seconds (the run goes on). A step waiting
        for approval waits for a human (``agentflow approve``, the console) like any other step."""
        last: RunResult | None = None
        async for event in self.events(timeout=timeout):
            if event.result is not None:
                last = event.result
        assert last is not None and last.finished  # events() ends with the finished run's event
        if not last.succeeded:
            raise RunFailed(last)
        return last

    async def outputs(self, timeout: float | None = None) -> Mapping[str, Any]:
        """The outputs of the run once it Succeeded (wait's errors otherwise)."""
        return dict((await self.wait(timeout)).outputs or {})

    async def cancel(self, reason: str = "") -> None:
        """Cancel the run (its exit handlers still run; wait() then raises RunFailed with phase Cancelled)."""
        await self._source.cancel(self.name, reason)
