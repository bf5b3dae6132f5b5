"""Prometheus metrics of the operator, in a registry of their own (no global state).

Names follow Prometheus' conventions: base units in the name (``_seconds``, ``_usd``, ``_tokens``), counters end
in ``_total``, ratios in ``_ratio``, and every label has a bounded set of values: namespaces, step kinds, phases,
models, Budget names, error classes. Never a run: a Workflow is one run, so its name or uid is never a label
(per run, read its status, `agentflow events` or `agentflow cost report`)::

    agentflow_reconcile_seconds                          histogram  one Workflow reconcile
    agentflow_reconcile_errors_total{type}               counter    reconciles that failed, by error class
    agentflow_kubernetes_api_writes_total                counter    Kubernetes API writes made by reconciles
    agentflow_runs_finished_total{phase}                 counter    runs that finished (Succeeded/Failed/Cancelled)
    agentflow_runs_stuck_total                           counter    of them, runs the engine ended Failed because
                                                                    nothing could move (RunFinished ``stuck``)
    agentflow_runs_stalled                               gauge      Workflows this replica cannot reconcile past an
                                                                    error now (Stalled=True on their status)
    agentflow_workflow_duration_seconds{phase}           histogram  RunStarted to RunFinished
    agentflow_runs{phase}                                gauge      unfinished runs this replica drives, by phase
    agentflow_steps{kind, phase}                         gauge      their step nodes not finished (Pending, Running,
                                                                    Waiting, Retrying), by step kind
    agentflow_step_queue_depth{namespace}                gauge      step nodes ready and held back (Pending: the
                                                                    run's parallelism or the namespace quota)
    agentflow_step_attempts_total{kind, phase}           counter    step attempts that ended: Succeeded, Failed,
                                                                    TimedOut, Cancelled (approvals: kind approval)
    agentflow_step_duration_seconds{kind, phase}         histogram  StepScheduled (ApprovalRequested) to its end
    agentflow_step_pod_start_seconds                     histogram  a step pod's creation to its container running
                                                                    (Kubernetes timestamps: whole seconds)
    agentflow_llm_tokens_total{namespace, model, direction}  counter  tokens of model calls recorded by steps
    agentflow_llm_cost_usd_total{namespace, model}       counter    their cost in US dollars
    agentflow_budget_{spent,remaining,reserved}_usd{namespace, budget}, ..._tokens, agentflow_budget_used_ratio
                                                         gauges     Budget status (services/budgets.py)

The step, run and model-call figures come from the journal records the reconciler appends (:class:`MeteredStore`
sees every append), so they count each thing once, when it is recorded, and whether or not model calls go
through the gateway (whose own ``agentflow_gateway_*`` metrics count what it charged: agentflow.gateway.metrics).
The gauges are read from the reconciler's runs at scrape time (:class:`RunsCollector`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..engine.journal import Record
from ..engine.values import EventType
from ..k8s.status import workflow_phase
from ..storage.attempts import AttemptPod
from ..storage.outbox import EventSource
from ..storage.retention import Collected

log = logging.getLogger(__name__)

# Budget gauge -> the status field it shows (services/budgets.py writes the status).
BUDGET_GAUGES = {
    "spent_usd": "spentUsd", "remaining_usd": "remainingUsd", "reserved_usd": "reservedUsd",
    "spent_tokens": "spentTokens", "remaining_tokens": "remainingTokens", "reserved_tokens": "reservedTokens",
    "used_ratio": "usedFraction",
}
_STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
_POD_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
_ENDED = {EventType.step_succeeded: "Succeeded", EventType.step_failed: "Failed",
          EventType.step_timed_out: "TimedOut", EventType.step_cancelled: "Cancelled"}
_SEEN_PODS = 10_000


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram("agentflow_reconcile_seconds", "Duration of one Workflow reconcile",
                                           registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.errors = Counter("agentflow_reconcile_errors", "Reconciles that failed, by error class", ["type"],
                              registry=r)
        self.api_writes = Counter("agentflow_kubernetes_api_writes", "Kubernetes API writes made by reconciles",
                                  registry=r)
        self.runs_finished = Counter("agentflow_runs_finished", "Runs that finished, by phase", ["phase"],
                                     registry=r)
        self.runs_stuck = Counter("agentflow_runs_stuck", "Runs the engine ended Failed because nothing could move",
                                  registry=r)
        self.reconciles_waiting = Gauge("agentflow_reconciles_waiting", "Workflows whose next reconcile waits for "
                                        "one of the operator's --max-concurrent-reconciles slots", registry=r)
        self.runs_stalled = Gauge("agentflow_runs_stalled", "Workflows that cannot be reconciled past an error now "
                                  "(Stalled=True)", registry=r)
        self.workflow_seconds = Histogram("agentflow_workflow_duration_seconds", "From RunStarted to RunFinished",
                                          ["phase"], buckets=_RUN_BUCKETS, registry=r)
        self.steps_ended = Counter("agentflow_step_attempts", "Step attempts that ended, by step kind and how",
                                   ["kind", "phase"], registry=r)
        self.step_seconds = Histogram("agentflow_step_duration_seconds",
                                      "From a step attempt's StepScheduled (or ApprovalRequested) to its end",
                                      ["kind", "phase"], buckets=_STEP_BUCKETS, registry=r)
        self.pod_start_seconds = Histogram("agentflow_step_pod_start_seconds",
                                           "From a step pod's creation to its container running", registry=r,
                                           buckets=_POD_BUCKETS)
        self.tokens = Counter("agentflow_llm_tokens", "Tokens of model calls recorded by steps",
                              ["namespace", "model", "direction"], registry=r)
        self.cost = Counter("agentflow_llm_cost_usd", "US dollars of model calls recorded by steps",
                            ["namespace", "model"], registry=r)
        self.budget = {
            name: Gauge(f"agentflow_budget_{name}", f"Budget {field} in the current window", ["namespace", "budget"],
                        registry=r)
            for name, field in BUDGET_GAUGES.items()
        }
        self.budget_threshold = Gauge("agentflow_budget_threshold_ratio", "The highest alert threshold of a Budget "
                                      "reached in the current window (0: none)", ["namespace", "budget"], registry=r)
        self._runs: dict[str, _RunTimes] = {}
        self._pods: OrderedDict[str, None] = OrderedDict()

    def watch(self, runs: Callable[[], Iterable[tuple[str, str, Iterable[Any]]]]) -> None:
        """Serve the gauges of the runs this replica drives (see :class:`RunsCollector`, :func:`driven_runs`)."""
        self.registry.register(RunsCollector(runs))

    # ----------------------------------------------------------------- from the journal

    def seed(self, run_uid: str, records: Iterable[Record]) -> None:
        """Learn a run's open attempts from records read back (a restarted operator), counting nothing."""
        times = self._runs.setdefault(run_uid, _RunTimes())
        for record in records:
            times.apply(record)

    def observe(self, run_uid: str, records: Sequence[Record], namespace: str) -> None:
        """Count what the appended ``records`` of a run say."""
        times = self._runs.setdefault(run_uid, _RunTimes())
        for record in records:
            e = record.event
            if e.type in _ENDED and e.node is not None:
                opened = times.nodes.get(e.node)
                if opened is not None:
                    kind, at = opened
                    phase = _ENDED[e.type]
                    self.steps_ended.labels(kind, phase).inc()
                    self.step_seconds.labels(kind, phase).observe(max(0.0, e.at - at))
            elif e.type is EventType.approval_decided and e.node is not None and e.node in times.nodes:
                _, at = times.nodes[e.node]
                phase = "Succeeded" if e.data.get("approved") else "Failed"
                self.steps_ended.labels("approval", phase).inc()
                self.step_seconds.labels("approval", phase).observe(max(0.0, e.at - at))
            elif e.type is EventType.cost_recorded:
                call = e.data.get("call") or {}
                if isinstance(call, Mapping) and call.get("kind", "llm") == "llm" and call.get("name"):
                    model = str(call["name"])
                    self.tokens.labels(namespace, model, "input").inc(_number(call.get("input_tokens")))
                    self.tokens.labels(namespace, model, "output").inc(_number(call.get("output_tokens")))
                    self.cost.labels(namespace, model).inc(_number(call.get("cost_usd")))
            elif e.type is EventType.run_finished:
                phase = str(e.data.get("phase", "Unknown"))
                self.runs_finished.labels(phase).inc()
                if e.data.get("stuck"):
                    self.runs_stuck.inc()
                if times.started is not None:
                    self.workflow_seconds.labels(phase).observe(max(0.0, e.at - times.started))
            times.apply(record)
        if times.finished:
            self._runs.pop(run_uid, None)

    def forget(self, run_uid: str) -> None:
        self._runs.pop(run_uid, None)

    # ----------------------------------------------------------------- pods

    def observe_pod(self, pod: Mapping[str, Any]) -> None:
        """A step pod's start latency, once per pod, when its container is first seen running."""
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or meta.get("name") or "")
        if not uid or uid in self._pods:
            return
        seconds = pod_start_seconds(pod)
        if seconds is None:
            return
        self._pods[uid] = None
        if len(self._pods) > _SEEN_PODS:
            self._pods.popitem(last=False)
        self.pod_start_seconds.observe(seconds)

    # ----------------------------------------------------------------- Budgets

    def observe_budget(self, namespace: str, budget: str, status: Mapping[str, Any]) -> None:
        """Set the budget gauges from a Budget status; a limit that is not set leaves its gauge out."""
        for name, field in BUDGET_GAUGES.items():
            value = status.get(field)
            gauge = self.budget[name]
            if isinstance(value, int | float):
                gauge.labels(namespace, budget).set(value)
            else:
                self._remove(gauge, namespace, budget)
        reached = [t for t in status.get("thresholdsReached") or () if isinstance(t, int | float)]
        self.budget_threshold.labels(namespace, budget).set(max(reached, default=0.0))

    def forget_budget(self, namespace: str, budget: str) -> None:
        """Drop the gauges of a deleted Budget."""
        for gauge in (*self.budget.values(), self.budget_threshold):
            self._remove(gauge, namespace, budget)

    @staticmethod
    def _remove(gauge: Gauge, namespace: str, budget: str) -> None:
        with contextlib.suppress(KeyError):  # never set
            gauge.remove(namespace, budget)


class _RunTimes:
    """When a run started and its attempts opened: what the durations are measured from."""

    __slots__ = ("finished", "nodes", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.finished = False
        self.nodes: dict[str, tuple[str, float]] = {}

    def apply(self, record: Record) -> None:
        e = record.event
        if e.type is EventType.run_started:
            self.started = e.at
        elif e.type is EventType.run_finished:
            self.finished = True
        elif e.node is None:
            return
        elif e.type is EventType.step_scheduled:
            self.nodes[e.node] = (str(e.data.get("kind") or "unknown"), e.at)
        elif e.type is EventType.approval_requested:
            self.nodes[e.node] = ("approval", e.at)
        elif e.type in _ENDED or e.type is EventType.approval_decided:
            self.nodes.pop(e.node, None)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_start_seconds(pod: Mapping[str, Any]) -> float | None:
    """Seconds from the pod's creation to its first container's ``running.startedAt`` (or, once it already
    finished, ``terminated.startedAt``); None until it has started."""
    created = _time((pod.get("metadata") or {}).get("creationTimestamp"))
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        started = _time((state.get("running") or state.get("terminated") or {}).get("startedAt"))
        if created is not None and started is not None:
            return max(0.0, (started - created).total_seconds())
    return None


# --------------------------------------------------------------------- the reconciler's store, metered


class _Store(Protocol):
    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]: ...
    async def append(self, run_uid: str, records: Sequence[Record], source: EventSource | None = None) -> None: ...
    async def put_attempt(self, run_uid: str, node: str, attempt: int, payload: Mapping[str, Any], *,
                          pod: AttemptPod | None = None) -> None: ...
    async def set_pod_uid(self, run_uid: str, node: str, attempt: int, pod_uid: str) -> None: ...
    async def attempt_of_pod(self, namespace: str, pod: str) -> AttemptPod | None: ...
    async def get_results(self, run_uid: str) -> dict[tuple[str, int], dict[str, Any]]: ...
    async def delete_run(self, run_uid: str) -> Collected: ...


class AppendObserver(Protocol):
    """Shown what each append stored (agentflow.services.quality.QualityWatch). Best effort: what it raises is
    logged, never the append's failure (the records are stored by then)."""

    async def appended(self, run_uid: str, records: Sequence[Record], source: EventSource | None) -> None: ...
    def forget(self, run_uid: str) -> None: ...


class MeteredStore:
    """The reconciler's JournalStore with every append counted in :class:`Metrics` once it is stored, and shown to
    ``observers``."""

    def __init__(self, store: _Store, metrics: Metrics, observers: Sequence[AppendObserver] = ()) -> None:
        self.store = store
        self.metrics = metrics
        self.observers = tuple(observers)

    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]:
        records = await self.store.load_journal(run_uid, after_seq)
        self.metrics.seed(run_uid, records)
        return records

    async def append(self, run_uid: str, records: Sequence[Record], source: EventSource | None = None) -> None:
        await self.store.append(run_uid, records, source)
        self.metrics.observe(run_uid, records, source.namespace if source is not None else "")
        for observer in self.observers:
            try:
                await observer.appended(run_uid, records, source)
            except Exception:  # a side channel: a bug there must not fail the reconcile that stored the records
                log.exception("%s failed on an append of run %s", type(observer).__name__, run_uid)

    async def put_attempt(self, run_uid: str, node: str, attempt: int, payload: Mapping[str, Any], *,
                          pod: AttemptPod | None = None) -> None:
        await self.store.put_attempt(run_uid, node, attempt, payload, pod=pod)

    async def set_pod_uid(self, run_uid: str, node: str, attempt: int, pod_uid: str) -> None:
        await self.store.set_pod_uid(run_uid, node, attempt, pod_uid)

    async def attempt_of_pod(self, namespace: str, pod: str) -> AttemptPod | None:
        return await self.store.attempt_of_pod(namespace, pod)

    async def get_results(self, run_uid: str) -> dict[tuple[str, int], dict[str, Any]]:
        return await self.store.get_results(run_uid)

    async def delete_run(self, run_uid: str) -> Collected:
        self.forget(run_uid)
        return await self.store.delete_run(run_uid)

    def forget(self, run_uid: str) -> None:
        """Drop what the metrics and the observers keep of a run (its Workflow is gone)."""
        self.metrics.forget(run_uid)
        for observer in self.observers:
            observer.forget(run_uid)


# --------------------------------------------------------------------- gauges at scrape time


class _Node(Protocol):
    phase: str
    plan: Any


class RunsCollector(Collector):
    """``agentflow_runs``, ``agentflow_steps`` and ``agentflow_step_queue_depth`` from the reconciler's runs,
    computed when Prometheus scrapes (from its thread: the dicts are copied first, which is atomic in CPython).

    ``runs``: returns (namespace, workflow phase, suspended, the run's nodes) of each unfinished run."""

    def __init__(self, runs: Callable[[], Iterable[tuple[str, str, Iterable[_Node]]]]) -> None:
        self._runs = runs

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("agentflow_runs", "", labels=["phase"])
        yield GaugeMetricFamily("agentflow_steps", "", labels=["kind", "phase"])
        yield GaugeMetricFamily("agentflow_step_queue_depth", "", labels=["namespace"])

    def collect(self) -> Iterator[Metric]:
        phases: Tally[str] = Tally()
        steps: Tally[tuple[str, str]] = Tally()
        queued: Tally[str] = Tally()
        for _ in range(3):
            try:
                phases.clear()
                steps.clear()
                queued.clear()
                for namespace, phase, nodes in list(self._runs()):
                    phases[phase] += 1
                    for node in list(nodes):
                        if node.phase in ("Pending", "Running", "Waiting", "Retrying"):
                            kind = getattr(getattr(node.plan, "kind", None), "value", "unknown")
                            steps[(kind, node.phase)] += 1
                            if node.phase == "Pending" and phase != "Suspended":
                                queued[namespace] += 1
                break
            except RuntimeError:  # a dict changed size while copied: read again
                continue
        runs = GaugeMetricFamily("agentflow_runs", "Unfinished runs this replica drives, by phase", labels=["phase"])
        for phase, n in sorted(phases.items()):
            runs.add_metric([phase], n)
        yield runs
        step_family = GaugeMetricFamily("agentflow_steps", "Step nodes of unfinished runs not finished, by kind and "
                                        "phase", labels=["kind", "phase"])
        for (kind, phase), n in sorted(steps.items()):
            step_family.add_metric([kind, phase], n)
        yield step_family
        queue = GaugeMetricFamily("agentflow_step_queue_depth", "Step nodes ready and held back by parallelism or "
                                  "the namespace quota", labels=["namespace"])
        for namespace, n in sorted(queued.items()):
            queue.add_metric([namespace], n)
        yield queue


def driven_runs(runs: Mapping[str, Any]) -> Callable[[], list[tuple[str, str, list[Any]]]]:
    """What :class:`RunsCollector` reads, from ``WorkflowReconciler.runs`` (uid -> RunState)."""

    def read() -> list[tuple[str, str, list[Any]]]:
        out = []
        for state in list(runs.values()):
            run = state.run
            if not run.finished:
                out.append((state.namespace, workflow_phase(run), list(run.nodes.values())))
        return out

    return read
