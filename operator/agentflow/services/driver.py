"""Driving one Workflow: reconcile, sleep until something changes or a timer is due, repeat.

Failures of the API server or PostgreSQL are retried with capped backoff; the
journal makes every pass safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..models import Catalog
from .metrics import Metrics
from .reconcile import InvalidWorkflow, MissingReferences, WorkflowReconciler, iso

log = logging.getLogger("agentflow.driver")

IDLE_SECONDS = 30.0


class Stopped(Protocol):
    def __bool__(self) -> bool: ...


class WorkflowDriver:
    def __init__(self, reconciler: WorkflowReconciler, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.clock = clock

    async def _fail_invalid(self, body: Mapping[str, Any], exc: InvalidWorkflow) -> None:
        meta = body["metadata"]
        now = iso(self.clock())
        status = {"phase": "Failed", "message": str(exc), "observedGeneration": meta.get("generation"),
                  "conditions": [
                      {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": str(exc),
                       "lastTransitionTime": now},
                      {"type": "Failed", "status": "True", "reason": "InvalidSpec", "message": str(exc),
                       "lastTransitionTime": now},
                      {"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": str(exc),
                       "lastTransitionTime": now}]}
        await self.reconciler.kube.patch_status("workflows", meta["namespace"], meta["name"], status)

    async def _waiting_for_references(self, body: Mapping[str, Any], exc: MissingReferences) -> None:
        meta = body["metadata"]
        message = f"waiting for what the workflow refers to: {exc}"
        if (body.get("status") or {}).get("message") == message:
            return
        now = iso(self.clock())
        status = {"phase": "Pending", "message": message, "observedGeneration": meta.get("generation"),
                  "conditions": [
                      {"type": "Ready", "status": "False", "reason": "MissingReference", "message": message,
                       "lastTransitionTime": now},
                      {"type": "Reconciling", "status": "True", "reason": "MissingReference", "message": message,
                       "lastTransitionTime": now}]}
        await self.reconciler.kube.patch_status("workflows", meta["namespace"], meta["name"], status)

    async def drive(self, body: Mapping[str, Any], catalog: Callable[[], Catalog], wakeup: asyncio.Event,
                    stopped: Stopped) -> None:
        backoff = 1.0
        while not stopped:
            wakeup.clear()
            started = time.perf_counter()
            try:
                outcome = await self.reconciler.reconcile(body, catalog())
            except InvalidWorkflow as exc:
                self.metrics.errors.labels("InvalidWorkflow").inc()
                await self._fail_invalid(body, exc)
                raise
            except MissingReferences as exc:
                await self._waiting_for_references(body, exc)
                await self._sleep(wakeup, stopped, 5.0)
                continue
            except Exception as exc:  # API, database or network trouble: retried, nothing is lost
                self.metrics.errors.labels(type(exc).__name__).inc()
                log.warning("reconcile of %s failed, retrying in %.0fs: %s",
                            body["metadata"].get("name"), backoff, exc)
                await self._sleep(wakeup, stopped, backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
            self.metrics.api_writes.inc(outcome.api_writes)
            if outcome.finished:
                self.metrics.runs_finished.labels(outcome.phase).inc()
                return
            delay = IDLE_SECONDS if outcome.wake_at is None else max(0.0, outcome.wake_at - self.clock())
            await self._sleep(wakeup, stopped, min(delay, IDLE_SECONDS))

    @staticmethod
    async def _sleep(wakeup: asyncio.Event, stopped: Stopped, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not stopped and not wakeup.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
