"""Budget status: spend of the current window from the ledger, conditions, and Events when it matters.

:func:`budget_status` (pure) builds a Budget's ``status`` from its body, the ledger's :class:`Usage` of its
current window and ``now``, and says which Events the change calls for; :class:`BudgetStatusSync` (the
doer) runs it for every Budget every few seconds and patches what changed.

Status: ``spentUsd/spentTokens``, ``reservedUsd/reservedTokens`` (calls in flight), ``remainingUsd/
remainingTokens`` (limit − spent − reserved, never below 0), ``windowStart/windowEnd``, ``limitUsd/
limitTokens``, ``usedFraction`` (the larger of the dollar and token fractions spent), ``thresholdsReached``
(this window's alertThresholds reached so far), ``lastRollover`` and three conditions, each with
``observedGeneration`` and a ``lastTransitionTime`` that moves only when its status does::

    Ready             True Active | False InvalidSpec / InvalidScope
    Exhausted         True LimitReached | False WithinLimits        (spent >= a limit)
    ThresholdReached  True ThresholdReached (the highest one, in the message) | False BelowThresholds

Events (on the Budget, ``kubectl describe budget``), each once::

    Warning ThresholdReached   spend reached a threshold of spec.alertThresholds in this window
    Warning BudgetExhausted    spend reached a limit (hard: calls are refused until the window ends)
    Normal  PeriodRolledOver   a new window started (with what the last one spent)

Once, with two operator replicas: the status is patched with a ``resourceVersion`` precondition, and only
the replica whose patch won emits the Events of that change; the loser re-reads the Budget next round and
finds the change already recorded (the thresholds in ``thresholdsReached``, Exhausted True, the new
``windowStart``). The Ready condition of Budgets is written here, not by the readiness handler of the other
kinds (one writer of ``status.conditions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import fnmatch
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..cost import line_for, scope_problem, thresholds_crossed, used_fraction
from ..k8s.events import KubeEvent, event_body
from ..k8s.kube import Kube, KubeError
from ..k8s.podspec import Owner
from ..models import ManifestError, parse_resource
from ..models.budget import Budget
from ..storage.ledger import BudgetLedger, LedgerError, Usage
from ..storage.postgres import StorageError
from .metrics import Metrics

__all__ = ["BudgetStatusSync", "StatusLedger", "StatusUpdate", "budget_status", "rfc3339"]

log = logging.getLogger("agentflow.budgets")

PLURAL = "budgets"
_STATUS_KEYS = (
    "spentUsd", "spentTokens", "reservedUsd", "reservedTokens", "remainingUsd", "remainingTokens", "windowStart",
    "windowEnd", "limitUsd", "limitTokens", "usedFraction", "thresholdsReached", "lastRollover",
    "observedGeneration", "conditions",
)


def rfc3339(when: dt.datetime) -> str:
    """UTC, to the second, as Kubernetes writes times."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


@dataclasses.dataclass(frozen=True)
class StatusUpdate:
    """What a Budget's status should be, whether that differs from what it is, and the Events to emit."""

    status: dict[str, Any]
    changed: bool
    events: tuple[KubeEvent, ...] = ()


def _conditions(
    wanted: Sequence[tuple[str, str, str, str]], previous: Sequence[Mapping[str, Any]], generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    before = {str(c.get("type")): c for c in previous}
    out = []
    for type_, status, reason, message in wanted:
        old = before.get(type_)
        since = old.get("lastTransitionTime") if old is not None and old.get("status") == status else None
        condition: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message,
                                     "lastTransitionTime": since or now}
        if generation is not None:
            condition["observedGeneration"] = generation
        out.append(condition)
    return out


def _changed(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    return any(previous.get(key) != status.get(key) for key in _STATUS_KEYS if key in status or key in previous)


def _invalid(body: Mapping[str, Any], reason: str, message: str, now: dt.datetime) -> StatusUpdate:
    previous: Mapping[str, Any] = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    status: dict[str, Any] = {"observedGeneration": generation} if generation is not None else {}
    status["conditions"] = _conditions(
        [("Ready", "False", reason, message), ("Exhausted", "False", reason, ""),
         ("ThresholdReached", "False", reason, "")],
        previous.get("conditions") or [], generation, rfc3339(now),
    )
    return StatusUpdate(status, _changed(previous, status))


def parse_budget(body: Mapping[str, Any]) -> Budget | str:
    """The Budget, or why its spec is invalid (every problem, with its field path)."""
    try:
        resource = parse_resource(body)
    except ManifestError as exc:
        return "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
    if not isinstance(resource, Budget):
        return f"expected a Budget, got a {resource.kind}"
    return resource


def budget_status(body: Mapping[str, Any], usage: Usage, now: dt.datetime) -> StatusUpdate:
    """The status of the Budget ``body`` given its current window's ``usage`` (pure; see the module docstring).

    ``usage`` must be the ledger's usage of ``line_for(budget, namespace, now)``: the window of ``now``.
    """
    parsed = parse_budget(body)
    if isinstance(parsed, str):
        return _invalid(body, "InvalidSpec", parsed, now)
    budget = parsed
    namespace = budget.metadata.namespace or ""
    problem = scope_problem(budget, namespace)
    if problem is not None:
        return _invalid(body, "InvalidScope", problem, now)
    previous: Mapping[str, Any] = body.get("status") or {}
    generation = budget.metadata.generation
    spec = budget.spec
    line = line_for(budget, namespace, now)
    now_iso = rfc3339(now)
    start_iso = rfc3339(line.window_start)
    end_iso = rfc3339(line.window_end) if line.window_end is not None else None
    name = f"{namespace}/{budget.metadata.name}"
    ending = f"the window ending {end_iso}" if end_iso else "total"

    status: dict[str, Any] = {
        "spentUsd": round(usage.spent_usd, 6),
        "spentTokens": usage.spent_tokens,
        "reservedUsd": round(usage.reserved_usd, 6),
        "reservedTokens": usage.reserved_tokens,
        "windowStart": start_iso,
    }
    if end_iso is not None:
        status["windowEnd"] = end_iso
    if spec.limits.usd is not None:
        status["limitUsd"] = spec.limits.usd
        status["remainingUsd"] = round(max(0.0, spec.limits.usd - usage.spent_usd - usage.reserved_usd), 6)
    if spec.limits.tokens is not None:
        status["limitTokens"] = spec.limits.tokens
        status["remainingTokens"] = max(0, spec.limits.tokens - usage.spent_tokens - usage.reserved_tokens)
    fraction = used_fraction(spec.limits, usage)
    status["usedFraction"] = round(fraction, 4)

    events: list[KubeEvent] = []
    old_start = previous.get("windowStart")
    rolled = old_start is not None and old_start != start_iso
    already: list[float] = [] if rolled or old_start is None else list(previous.get("thresholdsReached") or [])
    crossed = thresholds_crossed(spec.alert_thresholds, spec.limits, usage, already)
    status["thresholdsReached"] = sorted({*already, *crossed})
    status["lastRollover"] = now_iso if rolled else previous.get("lastRollover")
    if status["lastRollover"] is None:
        del status["lastRollover"]
    if rolled:
        was = previous.get("spentUsd")
        spent = f"; the last window spent {_usd(float(was))}" if isinstance(was, int | float) else ""
        events.append(KubeEvent("Normal", "PeriodRolledOver",
                                f"Budget {name}: a new {spec.period} window started at {start_iso}{spent}"))
    spent_text = _spent_text(spec.limits.usd, spec.limits.tokens, usage)
    for threshold in crossed:
        events.append(KubeEvent("Warning", "ThresholdReached",
                                f"Budget {name} reached {threshold:.0%} of its limit in {ending}: {spent_text}"))

    exhausted = fraction >= 1.0
    was_exhausted = any(c.get("type") == "Exhausted" and c.get("status") == "True"
                        for c in previous.get("conditions") or []) and not rolled
    consequence = (f"model calls in its scope are refused until {end_iso or 'spec.limits is raised'}"
                   if spec.enforcement == "hard" else "calls continue (soft enforcement)")
    if exhausted and not was_exhausted:
        events.append(KubeEvent("Warning", "BudgetExhausted",
                                f"Budget {name} reached its limit in {ending}: {spent_text}; {consequence}"))
    top = max(status["thresholdsReached"], default=None)
    wanted = [
        ("Ready", "True", "Active", f"{spent_text} in {ending}"),
        ("Exhausted", "True", "LimitReached", f"{spent_text}; {consequence}") if exhausted
        else ("Exhausted", "False", "WithinLimits", ""),
        ("ThresholdReached", "True", "ThresholdReached", f"{top:.0%} of the limit reached: {spent_text}")
        if top is not None else ("ThresholdReached", "False", "BelowThresholds", ""),
    ]
    if generation is not None:
        status["observedGeneration"] = generation
    status["conditions"] = _conditions(wanted, previous.get("conditions") or [], generation, now_iso)
    return StatusUpdate(status, _changed(previous, status), tuple(events))


def _spent_text(limit_usd: float | None, limit_tokens: int | None, usage: Usage) -> str:
    parts = []
    if limit_usd is not None:
        parts.append(f"{_usd(usage.spent_usd)} of {_usd(limit_usd)}")
    if limit_tokens is not None:
        parts.append(f"{usage.spent_tokens} of {limit_tokens} tokens")
    return " and ".join(parts) + " spent"


# --------------------------------------------------------------------------- the doer


class StatusLedger(BudgetLedger, Protocol):
    """What the status sync needs of a ledger: the contract plus giving back expired holds."""

    async def reclaim_expired(self) -> int: ...


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BudgetStatusSync:
    """Keeps every Budget's status current: ``await sync_once()``, or ``run(stopped)`` until stopped.

    ``namespaces`` None lists Budgets in all namespaces, else only in these. ``poke()`` makes a running
    loop sync now instead of at the next ``interval``.
    """

    def __init__(self, kube: Kube, ledger: StatusLedger, *, metrics: Metrics | None = None,
                 namespaces: Sequence[str] | None = None, interval: float = 5.0,
                 clock: Callable[[], dt.datetime] = _utc_now, reporting_instance: str = "") -> None:
        self.kube = kube
        self.ledger = ledger
        self.metrics = metrics
        self.namespaces = list(namespaces) if namespaces else None
        self.interval = interval
        self.clock = clock
        self.reporting_instance = reporting_instance
        self._wake = asyncio.Event()
        self._seen: set[tuple[str, str]] = set()

    def poke(self) -> None:
        self._wake.set()

    async def _budgets(self) -> list[dict[str, Any]]:
        if self.namespaces is None:
            return await self.kube.list_resources_all(PLURAL)
        if not any(set(pattern) & set("*?[") for pattern in self.namespaces):
            # plain names: list each namespace (namespaced RBAC is enough, no cluster-wide list)
            found: list[dict[str, Any]] = []
            for namespace in sorted(set(self.namespaces)):
                found.extend(await self.kube.list_resources(PLURAL, namespace))
            return found
        # --namespace takes globs (kopf's syntax): list every Budget and keep the watched namespaces'.
        return [
            body for body in await self.kube.list_resources_all(PLURAL)
            if any(fnmatch.fnmatchcase(str((body.get("metadata") or {}).get("namespace", "")), pattern)
                   for pattern in self.namespaces)
        ]

    async def sync_once(self) -> int:
        """One pass over every Budget; how many statuses were patched."""
        await self.ledger.reclaim_expired()
        patched = 0
        seen: set[tuple[str, str]] = set()
        for body in await self._budgets():
            meta = body.get("metadata") or {}
            namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
            seen.add((namespace, name))
            try:
                patched += await self._sync(body, namespace, name)
            except (KubeError, StorageError, LedgerError) as exc:  # the next round retries
                log.warning("budget %s/%s: status not updated: %s", namespace, name, exc)
        if self.metrics is not None:
            for namespace, name in self._seen - seen:
                self.metrics.forget_budget(namespace, name)
        self._seen = seen
        return patched

    async def _sync(self, body: Mapping[str, Any], namespace: str, name: str) -> int:
        now = self.clock()
        parsed = parse_budget(body)
        usage = Usage()
        if isinstance(parsed, Budget) and scope_problem(parsed, namespace) is None:
            usage = await self.ledger.usage(line_for(parsed, namespace, now))
        update = budget_status(body, usage, now)
        if self.metrics is not None:
            self.metrics.observe_budget(namespace, name, update.status)
        if not update.changed:
            return 0
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        if not await self.kube.patch_status_at(PLURAL, namespace, name, update.status, version):
            log.info("budget %s/%s changed meanwhile (another replica?); next round", namespace, name)
            return 0
        meta = body.get("metadata") or {}
        owner = Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "Budget", name, str(meta.get("uid", "")))
        for event in update.events:
            try:
                await self.kube.create_event(namespace, event_body(
                    owner, namespace, event.type, event.reason, event.message, rfc3339(now),
                    reporting_instance=self.reporting_instance,
                ))
            except KubeError as exc:
                log.warning("budget %s/%s: event %s not recorded: %s", namespace, name, event.reason, exc)
        return 1

    async def run(self, stopped: asyncio.Event) -> None:
        """Sync every ``interval`` seconds (sooner when poked) until ``stopped`` is set."""
        while not stopped.is_set():
            self._wake.clear()  # before the pass: a poke during it asks for another one
            try:
                await self.sync_once()
            except (KubeError, StorageError, LedgerError) as exc:
                log.warning("budget status sync failed, retrying in %.0fs: %s", self.interval, exc)
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopped.wait())]
            try:
                await asyncio.wait(waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
