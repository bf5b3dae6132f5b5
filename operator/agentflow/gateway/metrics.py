"""Prometheus metrics of the gateway, on a registry passed in (nothing is registered at import).

::

    agentflow_gateway_calls_total{namespace, model, status}        calls answered or refused ("ok", error type;
                                                                   a stream cut short: ClientDisconnected or its error)
    agentflow_gateway_tokens_total{namespace, model, direction}    input / output tokens charged
    agentflow_gateway_cost_usd_total{namespace, model}             US dollars charged
    agentflow_gateway_cache_total{namespace, result}               hit / miss / bypass
    agentflow_gateway_refusals_total{namespace, reason}            BudgetExceeded, ModelNotAllowed, ...
    agentflow_gateway_upstream_seconds{model}                      latency of successful provider calls
    agentflow_gateway_request_seconds{status}                      whole request inside the gateway
    agentflow_gateway_fallbacks_total{namespace, model}            a candidate failed and the next was tried
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls = Counter("agentflow_gateway_calls", "Model calls through the gateway",
                             ["namespace", "model", "status"], registry=r)
        self.tokens = Counter("agentflow_gateway_tokens", "Tokens charged by the gateway",
                              ["namespace", "model", "direction"], registry=r)
        # Not by workflow: a Workflow is one run, an unbounded label (agentflow cost report has spend per workflow).
        self.cost = Counter("agentflow_gateway_cost_usd", "US dollars charged by the gateway",
                            ["namespace", "model"], registry=r)
        self.cache = Counter("agentflow_gateway_cache", "Response cache lookups",
                             ["namespace", "result"], registry=r)
        self.refusals = Counter("agentflow_gateway_refusals", "Calls refused before reaching a provider",
                                ["namespace", "reason"], registry=r)
        self.fallbacks = Counter("agentflow_gateway_fallbacks", "Candidates that failed before another was tried",
                                 ["namespace", "model"], registry=r)
        self.upstream_seconds = Histogram("agentflow_gateway_upstream_seconds", "Latency of provider calls",
                                          ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("agentflow_gateway_request_seconds", "Time of a request in the gateway",
                                         ["status"], buckets=_LATENCY_BUCKETS, registry=r)
