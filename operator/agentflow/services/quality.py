"""Quality drift of Agents in the operator: the journal records the reconciler appends -> quality signals ->
the drift test (agentflow.quality, pure) -> the Agent's Drifting condition, Events and metrics.

::

    MeteredStore.append(run, records, source) -> QualityWatch.appended
        SignalTracker.observe(run, namespace, llm_subjects(plan), events)  # one Observation per signal per attempt
        Monitor.update(observations) -> [Alarm | Cleared]
        per Agent with a change: get the Agent, k8s.drift.drifting_status -> patch its status; one Event per change

Metrics (labels: Agents and PromptVersions are resources a team names, bounded like namespaces; never a run)::

    agentflow_quality_observations_total{namespace, agent, prompt}           llm step attempts observed
    agentflow_quality_drifting{namespace, agent, prompt, signal}             1 while the signal drifts
    agentflow_quality_drift_alarms_total{namespace, agent, prompt, signal}   alarms raised

Detectors live in memory: a restarted operator learns its baselines again from the runs it drives next (the
journal is not read back for them), and each replica sees the runs it drives (one, with kopf peering). Writing is
best effort: a status or Event the API server refuses is logged, never fails the reconcile that appended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..engine.journal import Record
from ..engine.plan import Plan
from ..engine.values import EventType
from ..k8s.drift import alarm_event, cleared_event, drifting_status
from ..k8s.events import event_body
from ..k8s.kube import KubeError
from ..k8s.podspec import Owner
from ..quality import Alarm, Cleared, DriftSettings, Monitor, SignalTracker, llm_subjects
from ..storage.outbox import EventSource

__all__ = ["QualityMetrics", "QualityWatch"]

log = logging.getLogger(__name__)


class QualityMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.observations = Counter("agentflow_quality_observations", "LLM step attempts whose quality signals "
                                    "were observed", ["namespace", "agent", "prompt"], registry=r)
        self.drifting = Gauge("agentflow_quality_drifting", "1 while a quality signal of an Agent's PromptVersion "
                              "drifts", ["namespace", "agent", "prompt", "signal"], registry=r)
        self.alarms = Counter("agentflow_quality_drift_alarms", "Quality drift alarms raised",
                              ["namespace", "agent", "prompt", "signal"], registry=r)


class _Kube(Protocol):
    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]: ...
    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class QualityWatch:
    """Watches the quality of the Agents of the runs whose journal appends it is shown (see :meth:`follow`)."""

    def __init__(self, kube: _Kube, metrics: QualityMetrics | None = None, *, settings: DriftSettings | None = None,
                 clock: Callable[[], float] = time.time, reporting_instance: str = "") -> None:
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.reporting_instance = reporting_instance
        self.tracker = SignalTracker()
        self.monitor = Monitor(settings)
        self._plans: Callable[[str], Plan | None] = lambda uid: None
        self._subjects: dict[str, tuple[Plan, dict[str, tuple[str, str]]]] = {}

    def follow(self, runs: Mapping[str, Any]) -> None:
        """Find each run's plan in ``runs`` (``WorkflowReconciler.runs``: uid -> RunState)."""
        self._plans = lambda uid: getattr(runs.get(uid), "plan", None)

    def _llm_subjects(self, run_uid: str, plan: Plan) -> dict[str, tuple[str, str]]:
        cached = self._subjects.get(run_uid)
        if cached is None or cached[0] is not plan:
            cached = self._subjects[run_uid] = (plan, llm_subjects(plan))
        return cached[1]

    async def appended(self, run_uid: str, records: Sequence[Record], source: EventSource | None) -> None:
        plan = self._plans(run_uid)
        if plan is None or source is None:
            return
        subjects = self._llm_subjects(run_uid, plan)
        observations = self.tracker.observe(run_uid, source.namespace, subjects, [r.event for r in records])
        if any(r.event.type is EventType.run_finished for r in records):
            self._subjects.pop(run_uid, None)
        if not observations:
            return
        changes = self.monitor.update(observations)
        if self.metrics is not None:
            for o in observations:
                if o.signal == "failure":  # one per attempt
                    self.metrics.observations.labels(o.subject.namespace, o.subject.agent, o.subject.prompt).inc()
            for change in changes:
                s = change.subject
                labels = (s.namespace, s.agent, s.prompt, change.signal)
                self.metrics.drifting.labels(*labels).set(1 if isinstance(change, Alarm) else 0)
                if isinstance(change, Alarm):
                    self.metrics.alarms.labels(*labels).inc()
        for namespace, agent in sorted({(c.subject.namespace, c.subject.agent) for c in changes}):
            await self._write(namespace, agent, [c for c in changes if (c.subject.namespace, c.subject.agent) ==
                                                 (namespace, agent)])

    def forget(self, run_uid: str) -> None:
        self.tracker.forget(run_uid)
        self._subjects.pop(run_uid, None)

    async def _write(self, namespace: str, agent: str, changes: Sequence[Alarm | Cleared]) -> None:
        """The Agent's Drifting condition and an Event per change; best effort."""
        try:
            body = await self.kube.get_resource("agents", namespace, agent)
            now = _iso(self.clock())
            status = drifting_status(body.get("status") or {}, self.monitor.drifting(namespace, agent), now=now)
            if status is not None:
                await self.kube.patch_status("agents", namespace, agent, status)
            meta = body.get("metadata") or {}
            owner = Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "Agent", agent,
                          str(meta.get("uid", "")))
            notes = [alarm_event(agent, c) for c in changes if isinstance(c, Alarm)]
            if status is not None and status["conditions"][-1]["status"] == "False":
                notes.append(cleared_event(agent))
            for type_, reason, message in notes:
                await self.kube.create_event(namespace, event_body(owner, namespace, type_, reason, message, now,
                                                                   reporting_instance=self.reporting_instance))
        except KubeError as exc:  # deleted meanwhile, RBAC, the API away: the metric still says it
            log.warning("could not record quality drift on Agent %s/%s: %s", namespace, agent, exc)
