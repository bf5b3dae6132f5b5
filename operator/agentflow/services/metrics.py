"""Prometheus metrics of the operator, in a registry of their own (no global state)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Budget gauge -> the status field it shows (services/budgets.py writes the status).
BUDGET_GAUGES = {
    "spent_usd": "spentUsd", "remaining_usd": "remainingUsd", "reserved_usd": "reservedUsd",
    "spent_tokens": "spentTokens", "remaining_tokens": "remainingTokens", "reserved_tokens": "reservedTokens",
    "used_fraction": "usedFraction",
}


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
        self.budget = {
            name: Gauge(f"agentflow_budget_{name}", f"Budget {field} in the current window", ["namespace", "budget"],
                        registry=r)
            for name, field in BUDGET_GAUGES.items()
        }

    def observe_budget(self, namespace: str, budget: str, status: Mapping[str, Any]) -> None:
        """Set the budget gauges from a Budget status; a limit that is not set leaves its gauge out."""
        for name, field in BUDGET_GAUGES.items():
            value = status.get(field)
            gauge = self.budget[name]
            if isinstance(value, int | float):
                gauge.labels(namespace, budget).set(value)
            else:
                self._remove(gauge, namespace, budget)

    def forget_budget(self, namespace: str, budget: str) -> None:
        """Drop the gauges of a deleted Budget."""
        for gauge in self.budget.values():
            self._remove(gauge, namespace, budget)

    @staticmethod
    def _remove(gauge: Gauge, namespace: str, budget: str) -> None:
        with contextlib.suppress(KeyError):  # never set
            gauge.remove(namespace, budget)
