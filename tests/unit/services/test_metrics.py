"""The operator's metrics: what the journal says is counted once, names and labels follow the conventions (no run
as a label), the gauges come from the runs the reconciler drives, and the reconciler tells the store where its
records go (the events outbox)."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.events.publisher import EventMetrics
from agentflow.gateway.metrics import GatewayMetrics
from agentflow.services.metrics import MeteredStore, Metrics, driven_runs, pod_start_seconds
from agentflow.services.quality import QualityMetrics
from agentflow.storage.outbox import EventSource
from agentflow.testing import MemoryStore

from .test_reconcile import FANOUT, Cluster, catalog, workflow

E = EventType
UID = "0b5e7c1a-0000-4000-8000-000000000001"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def run_events() -> list[Event]:
    call = {"kind": "llm", "name": "openai/gpt-4o-mini", "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01}
    return [
        Event(E.run_started, None, {}, 100.0),
        Event(E.step_scheduled, "classify", {"step": "classify", "kind": "llm", "attempt": 1}, 100.0),
        Event(E.cost_recorded, "classify", {"attempt": 1, "call": call}, 103.0),
        Event(E.step_succeeded, "classify", {"attempt": 1}, 103.0),
        Event(E.step_scheduled, "fetch", {"step": "fetch", "kind": "tool", "attempt": 1}, 103.0),
        Event(E.step_failed, "fetch", {"attempt": 1, "error": {"type": "X"}}, 104.0),
        Event(E.step_scheduled, "fetch", {"step": "fetch", "kind": "tool", "attempt": 2}, 110.0),
        Event(E.step_timed_out, "fetch", {"attempt": 2}, 140.0),
        Event(E.approval_requested, "review", {"step": "review"}, 140.0),
        Event(E.approval_decided, "review", {"approved": True, "by": "alice"}, 200.0),
        Event(E.run_finished, None, {"phase": "Failed"}, 201.0),
    ]


async def test_the_journal_counts_steps_durations_tokens_and_runs_once() -> None:
    metrics = Metrics()
    store = MeteredStore(MemoryStore(), metrics)
    journal = Journal()
    events = run_events()
    for i in range(0, len(events), 2):
        await store.append("r1", journal.extend(events[i:i + 2]), EventSource("team-a", "wf", "Running"))
    assert sample(metrics, "agentflow_step_attempts_total", kind="llm", phase="Succeeded") == 1
    assert sample(metrics, "agentflow_step_attempts_total", kind="tool", phase="Failed") == 1
    assert sample(metrics, "agentflow_step_attempts_total", kind="tool", phase="TimedOut") == 1
    assert sample(metrics, "agentflow_step_attempts_total", kind="approval", phase="Succeeded") == 1
    assert sample(metrics, "agentflow_step_duration_seconds_sum", kind="tool", phase="TimedOut") == 30.0
    assert sample(metrics, "agentflow_step_duration_seconds_sum", kind="approval", phase="Succeeded") == 60.0
    assert sample(metrics, "agentflow_llm_tokens_total", namespace="team-a", model="openai/gpt-4o-mini",
                  direction="input") == 100
    assert sample(metrics, "agentflow_llm_cost_usd_total", namespace="team-a", model="openai/gpt-4o-mini") == 0.01
    assert sample(metrics, "agentflow_runs_finished_total", phase="Failed") == 1
    assert sample(metrics, "agentflow_workflow_duration_seconds_sum", phase="Failed") == 101.0
    assert metrics._runs == {}, "a finished run is forgotten"
    assert sample(metrics, "agentflow_runs_stuck_total") == 0


async def test_a_run_the_engine_ended_as_stuck_is_counted() -> None:
    metrics = Metrics()
    store = MeteredStore(MemoryStore(), metrics)
    events = [Event(E.run_started, None, {}, 1.0),
              Event(E.run_finished, None, {"phase": "Failed", "stuck": ["wait"]}, 2.0)]
    await store.append("r1", Journal().extend(events), EventSource("team-a", "wf", "Running"))
    assert sample(metrics, "agentflow_runs_stuck_total") == 1
    assert sample(metrics, "agentflow_runs_finished_total", phase="Failed") == 1


def test_budget_gauges_show_the_highest_threshold_reached_and_go_with_the_budget() -> None:
    metrics = Metrics()
    metrics.observe_budget("team-a", "monthly", {"usedFraction": 0.2, "thresholdsReached": []})
    assert metrics.registry.get_sample_value("agentflow_budget_threshold_ratio",
                                             {"namespace": "team-a", "budget": "monthly"}) == 0
    metrics.observe_budget("team-a", "monthly", {"usedFraction": 0.93, "thresholdsReached": [0.5, 0.9]})
    assert sample(metrics, "agentflow_budget_threshold_ratio", namespace="team-a", budget="monthly") == 0.9
    metrics.forget_budget("team-a", "monthly")
    assert metrics.registry.get_sample_value("agentflow_budget_threshold_ratio",
                                             {"namespace": "team-a", "budget": "monthly"}) is None


async def test_a_restarted_operator_learns_open_attempts_from_the_journal_it_loads() -> None:
    inner = MemoryStore()
    events = run_events()
    journal = Journal()
    await inner.append("r1", journal.extend(events[:2]))  # written by the operator before the restart
    metrics = Metrics()
    store = MeteredStore(inner, metrics)
    await store.load_journal("r1")
    await store.append("r1", journal.extend(events[2:4]))
    assert sample(metrics, "agentflow_step_attempts_total", kind="llm", phase="Succeeded") == 1
    assert sample(metrics, "agentflow_step_duration_seconds_sum", kind="llm", phase="Succeeded") == 3.0
    assert sample(metrics, "agentflow_runs_finished_total", phase="Failed") == 0


ALLOWED_LABELS = {"type", "phase", "kind", "namespace", "model", "direction", "budget", "status", "result",
                  "reason", "agent", "prompt", "signal"}  # agent, prompt: Agents and PromptVersions (resources)


def test_names_and_labels_follow_the_conventions() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    GatewayMetrics(registry)
    EventMetrics(registry)
    quality = QualityMetrics(registry)
    quality.drifting.labels("team-a", "writer", "summarize-v2", "failure").set(1)
    quality.alarms.labels("team-a", "writer", "summarize-v2", "failure").inc()
    metrics.watch(lambda: [("team-a", "Running", [])])
    metrics.observe_budget("team-a", "monthly", {"spentUsd": 1.0, "usedFraction": 0.1})
    families = list(registry.collect())
    assert len(families) >= 30
    for family in families:
        assert family.name.startswith("agentflow_"), family.name
        assert re.fullmatch(r"[a-z_]+", family.name), family.name
        labels = {label for s in family.samples for label in s.labels} - {"le"}
        assert labels <= ALLOWED_LABELS, (family.name, labels)  # never a run, workflow, pod or uid
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert "fraction" not in family.name and "percent" not in family.name
    names = {f.name for f in families}
    for expected in ("agentflow_steps", "agentflow_step_attempts", "agentflow_step_duration_seconds",
                     "agentflow_workflow_duration_seconds", "agentflow_step_queue_depth",
                     "agentflow_step_pod_start_seconds", "agentflow_llm_tokens", "agentflow_llm_cost_usd",
                     "agentflow_events_lag_seconds", "agentflow_events_pending", "agentflow_reconcile_errors",
                     "agentflow_budget_used_ratio", "agentflow_gateway_cost_usd", "agentflow_runs",
                     "agentflow_runs_stuck", "agentflow_runs_stalled", "agentflow_budget_threshold_ratio",
                     "agentflow_quality_drifting", "agentflow_quality_drift_alarms"):
        assert expected in names, expected
    # the exposition parses (what Prometheus scrapes)
    assert list(text_string_to_metric_families(generate_latest(registry).decode()))


def pod(created: str, **state: Any) -> dict[str, Any]:
    return {"metadata": {"uid": "p1", "creationTimestamp": created},
            "status": {"containerStatuses": [{"state": state}] if state else []}}


def test_pod_start_latency_once_per_pod() -> None:
    assert pod_start_seconds(pod("2026-01-01T00:00:00Z")) is None
    assert pod_start_seconds(pod("2026-01-01T00:00:00Z", waiting={"reason": "ContainerCreating"})) is None
    assert pod_start_seconds(pod("2026-01-01T00:00:00Z", running={"startedAt": "2026-01-01T00:00:04Z"})) == 4.0
    assert pod_start_seconds(pod("2026-01-01T00:00:00Z", terminated={"startedAt": "2026-01-01T00:00:02Z"})) == 2.0
    assert pod_start_seconds(pod("not a time", running={"startedAt": "2026-01-01T00:00:04Z"})) is None
    metrics = Metrics()
    running = pod("2026-01-01T00:00:00Z", running={"startedAt": "2026-01-01T00:00:04Z"})
    for _ in range(3):
        metrics.observe_pod(running)
    assert sample(metrics, "agentflow_step_pod_start_seconds_count") == 1
    assert sample(metrics, "agentflow_step_pod_start_seconds_sum") == 4.0


async def test_gauges_come_from_the_runs_the_reconciler_drives_and_the_store_learns_where_records_go() -> None:
    c = Cluster()
    metrics = Metrics()
    metrics.watch(driven_runs(c.reconciler.runs))
    body = workflow({**FANOUT, "parallelism": 1})
    await c.reconciler.reconcile(body, catalog())
    assert sample(metrics, "agentflow_runs", phase="Running") == 1
    assert sample(metrics, "agentflow_steps", kind="tool", phase="Running") == 1
    c.kubelet()
    c.now += 1
    await c.reconciler.reconcile(body, catalog())
    # first done; the fan-out's three items: one runs (parallelism 1), two wait in the queue
    assert sample(metrics, "agentflow_steps", kind="tool", phase="Pending") == 2
    assert sample(metrics, "agentflow_step_queue_depth", namespace="team") == 2
    sources = c.store.sources[UID]
    assert {(s.namespace, s.workflow) for s in sources if s is not None} == {("team", "wf")}
    assert all(s is not None for s in sources) and sources[0].phase == "Running"  # type: ignore[union-attr]
    await c.run(body)
    assert c.store.sources[UID][-1].phase == "Succeeded"  # type: ignore[union-attr]
    assert sample(metrics, "agentflow_runs", phase="Running") == 0
