"""Driving one Workflow: reconcile, sleep until something changes or a timer is due, repeat.

Failures are retried with capped backoff (1 s doubling to 60 s); the journal makes every pass safe to
repeat. What the operator cannot get past is never only in its log: it reaches the Workflow's status
(k8s.status.stalled_status: Stalled True with a reason and a message saying what to do) and one Kubernetes
Event, and both are cleared (the status of the next reconcile that gets through, a ``Recovered`` Event)
when it recovers::

    error                                   kind        reason               on the status
    InvalidWorkflow                         final       InvalidSpec          Failed; the driver stops
    MissingReferences                       waiting     MissingReference     Pending; checked every 5 s
    kube Invalid (400/422)                  permanent   APIRejected          Stalled at the first failure
    kube Forbidden (401/403)                permanent   Forbidden            Stalled at the first failure
    kube NotFound (404)                     permanent   NotFound             Stalled at the first failure
    any other error (a bug, bad data)       permanent   ReconcileError       Stalled at the first failure
    kube Conflict, 5xx, network             transient   APIUnavailable       Stalled after STALL_AFTER_FAILURES
    storage (PostgreSQL)                    transient   DatabaseUnavailable  failures in a row or STALL_AFTER_SECONDS

Permanent errors are retried too (an RBAC fix, a namespace or CRD put back, an edited spec can make the next
pass work), at the longest backoff.

At most ``max_concurrent`` reconciles run at once (``--max-concurrent-reconciles``, default 32; the rest wait in
arrival order, counted by ``agentflow_reconciles_waiting``). A burst of 1,000 Workflows created together otherwise
starts 1,000 reconciles at once, each with its API requests and database work in flight; bounded, that load follows
the bound, not the burst (the memory of a burst is mostly kopf's per-Workflow state, which this does not bound).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..k8s.events import event_body
from ..k8s.kube import Forbidden, Invalid, KubeError, NotFound
from ..k8s.podspec import Owner
from ..k8s.status import invalid_spec_status, missing_references_status, stalled_status
from ..models import Catalog
from ..storage.errors import StorageError
from .errors import InvalidWorkflow, MissingReferences
from .metrics import Metrics
from .reconcile import Outcome, WorkflowReconciler, iso

log = logging.getLogger("agentflow.driver")

IDLE_SECONDS = 30.0
MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
STALL_AFTER_FAILURES = 5
"""Transient failures in a row after which the Workflow's status says the operator is stuck on them."""
STALL_AFTER_SECONDS = 120.0
"""Or: seconds since the first of them."""
MISSING_REFERENCES_RECHECK_SECONDS = 5.0
DEFAULT_MAX_CONCURRENT_RECONCILES = 32
"""Reconciles in flight at once (two per Kubernetes API thread of the client: each waits on the API part of the
time)."""


class Stopped(Protocol):
    def __bool__(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Trouble:
    """What a failed reconcile means for the Workflow's status."""

    reason: str
    permanent: bool
    hint: str


def classify(exc: BaseException) -> Trouble:
    """The reason, kind and advice for an error a reconcile raised (see the table in the module docstring)."""
    if isinstance(exc, Invalid):
        return Trouble("APIRejected", True, "the API server refuses an object the operator built for this "
                       "Workflow; fix the Workflow's spec (or report it if the spec is valid)")
    if isinstance(exc, Forbidden):
        return Trouble("Forbidden", True, "the API server forbids it in the namespace: the operator's RBAC (the "
                       "chart's watched namespaces), or a ResourceQuota or admission policy of the namespace")
    if isinstance(exc, NotFound):
        return Trouble("NotFound", True, "something the operator needs is missing (the namespace being deleted, "
                       "a CRD not installed)")
    if isinstance(exc, KubeError):
        return Trouble("APIUnavailable", False, "the Kubernetes API did not answer as it should; it is retried")
    if isinstance(exc, StorageError):
        return Trouble("DatabaseUnavailable", False, "the operator's PostgreSQL did not answer as it should; it is "
                       "retried")
    return Trouble("ReconcileError", True, "an error the operator did not expect; it is retried, but please "
                   "report it with the operator's log")


@dataclasses.dataclass
class _Failures:
    """Consecutive failed reconciles of one Workflow."""

    count: int = 0
    since: float = 0.0
    reported: str | None = None  # the reason already on the status and in an Event

    def due(self, trouble: Trouble, now: float) -> bool:
        return trouble.permanent or self.count >= STALL_AFTER_FAILURES or now - self.since >= STALL_AFTER_SECONDS


class WorkflowDriver:
    def __init__(self, reconciler: WorkflowReconciler, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time,
                 max_concurrent: int = DEFAULT_MAX_CONCURRENT_RECONCILES) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent: at least 1, got {max_concurrent}")
        self.reconciler = reconciler
        self.metrics = metrics
        self.clock = clock
        self.slots = asyncio.Semaphore(max_concurrent)

    async def _reconcile(self, body: Mapping[str, Any], catalog: Callable[[], Catalog]) -> Outcome:
        """One reconcile, in one of the driver's slots."""
        self.metrics.reconciles_waiting.inc()
        try:
            await self.slots.acquire()
        finally:
            self.metrics.reconciles_waiting.dec()
        try:
            started = time.perf_counter()
            outcome = await self.reconciler.reconcile(body, catalog())
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)  # without the wait for a slot
            return outcome
        finally:
            self.slots.release()

    async def _write(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """Patch ``status`` onto the Workflow; False (logged) when the API refuses that too."""
        meta = body["metadata"]
        try:
            await self.reconciler.kube.patch_status("workflows", meta["namespace"], meta["name"], status)
        except KubeError as exc:
            log.warning("could not write the status of %s/%s: %s", meta["namespace"], meta["name"], exc)
            return False
        state = self.reconciler.runs.get(str(meta.get("uid")))
        if state is not None:
            state.last_status = None  # the next reconcile that gets through writes its whole status again
        return True

    async def _event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        owner = Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "Workflow", meta["name"], meta["uid"])
        try:
            await self.reconciler.kube.create_event(meta["namespace"], event_body(
                owner, meta["namespace"], type_, reason, message, iso(self.clock())))
        except KubeError as exc:  # Events are best effort; the status is the record
            log.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)

    async def _fail_invalid(self, body: Mapping[str, Any], exc: InvalidWorkflow) -> None:
        status = invalid_spec_status(str(exc), now=iso(self.clock()), generation=body["metadata"].get("generation"),
                                     previous=(body.get("status") or {}).get("conditions") or ())
        if await self._write(body, status):
            await self._event(body, "Warning", "InvalidSpec", f"the workflow cannot run: {exc}")

    async def _waiting_for_references(self, body: Mapping[str, Any], exc: MissingReferences) -> None:
        current = body.get("status") or {}
        status = missing_references_status(str(exc), now=iso(self.clock()),
                                           generation=body["metadata"].get("generation"),
                                           previous=current.get("conditions") or ())
        if current.get("message") != status["message"]:
            await self._write(body, status)

    async def _failed(self, body: Mapping[str, Any], exc: Exception, failures: _Failures) -> float:
        """Count a failed reconcile, say so on the status once it is due; the delay before the next one."""
        now = self.clock()
        if failures.count == 0:
            failures.since = now
        failures.count += 1
        trouble = classify(exc)
        self.metrics.errors.labels(type(exc).__name__).inc()
        delay = min(MIN_BACKOFF_SECONDS * 2.0 ** (failures.count - 1), MAX_BACKOFF_SECONDS)
        if trouble.permanent:
            delay = MAX_BACKOFF_SECONDS
        meta = body["metadata"]
        log.warning("reconcile of %s/%s failed (%d in a row), retrying in %.0fs: %s: %s", meta.get("namespace"),
                    meta.get("name"), failures.count, delay, type(exc).__name__, exc)
        if failures.reported != trouble.reason and failures.due(trouble, now):
            message = (f"the operator cannot get past {type(exc).__name__}: {exc} ({failures.count} failed "
                       f"reconcile(s) since {iso(failures.since)}; {trouble.hint}; retrying every "
                       f"{MAX_BACKOFF_SECONDS:.0f}s at most)")
            status = stalled_status(body.get("status") or {}, trouble.reason, message, now=iso(now),
                                    generation=meta.get("generation"))
            if await self._write(body, status):
                if failures.reported is None:
                    self.metrics.runs_stalled.inc()
                failures.reported = trouble.reason
                await self._event(body, "Warning", trouble.reason, message)
        return delay

    async def _recovered(self, body: Mapping[str, Any], failures: _Failures) -> None:
        if failures.reported is not None:
            self.metrics.runs_stalled.dec()
            await self._event(body, "Normal", "Recovered", f"reconciling again after {failures.count} failed "
                              f"reconcile(s) ({failures.reported}) since {iso(failures.since)}")
        failures.count, failures.reported = 0, None

    async def drive(self, body: Mapping[str, Any], catalog: Callable[[], Catalog], wakeup: asyncio.Event,
                    stopped: Stopped) -> None:
        failures = _Failures()
        try:
            await self._drive(body, catalog, wakeup, stopped, failures)
        finally:
            if failures.reported is not None:  # deleted, or this replica stopped driving it, while Stalled
                self.metrics.runs_stalled.dec()

    async def _drive(self, body: Mapping[str, Any], catalog: Callable[[], Catalog], wakeup: asyncio.Event,
                     stopped: Stopped, failures: _Failures) -> None:
        while not stopped:
            wakeup.clear()
            try:
                outcome = await self._reconcile(body, catalog)
            except InvalidWorkflow as exc:
                self.metrics.errors.labels("InvalidWorkflow").inc()
                await self._fail_invalid(body, exc)
                raise
            except MissingReferences as exc:
                await self._waiting_for_references(body, exc)
                await self._sleep(wakeup, stopped, MISSING_REFERENCES_RECHECK_SECONDS)
                continue
            except Exception as exc:  # the API, the database, a bug: said on the status, retried, nothing lost
                delay = await self._failed(body, exc, failures)
                await self._sleep(wakeup, stopped, delay)
                continue
            await self._recovered(body, failures)
            self.metrics.api_writes.inc(outcome.api_writes)
            if outcome.finished:  # counted in agentflow_runs_finished_total when RunFinished was journaled
                # what was kept to drive it goes (issue 17: memory with many finished Workflows live); a later
                # reconcile (another process) reads the journal again
                self.reconciler.forget(str(body["metadata"]["uid"]))
                return
            delay = IDLE_SECONDS if outcome.wake_at is None else max(0.0, outcome.wake_at - self.clock())
            await self._sleep(wakeup, stopped, min(delay, IDLE_SECONDS))

    @staticmethod
    async def _sleep(wakeup: asyncio.Event, stopped: Stopped, seconds: float) -> None:
        await nap(wakeup, stopped, seconds)


async def nap(wakeup: asyncio.Event, stopped: Stopped, seconds: float) -> None:
    """Sleep ``seconds`` or until ``wakeup`` is set or ``stopped`` turns true (looked at every second)."""
    deadline = time.monotonic() + seconds
    while not stopped and not wakeup.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=min(remaining, 1.0))
        except TimeoutError:
            continue
