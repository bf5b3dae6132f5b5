"""Prometheus metrics of the operator, in a registry of their own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram("agentflow_reconcile_seconds", "Duration of one Workflow reconcile",
                                           registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.errors = Counter("agentflow_reconcile_errors_total", "Reconcile errors by type", ["type"], registry=r)
        self.api_writes = Counter("agentflow_api_writes_total", "Kubernetes API writes made by reconciles",
                                  registry=r)
        self.runs_finished = Counter("agentflow_runs_finished_total", "Finished runs by phase", ["phase"],
                                     registry=r)
        self.steps = Gauge("agentflow_steps", "Step nodes by phase across driven runs", ["phase"], registry=r)
        self.pod_start_seconds = Histogram("agentflow_pod_start_seconds",
                                           "From a step pod's creation to its container running", registry=r,
                                           buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
