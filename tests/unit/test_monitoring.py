"""The chart's Grafana dashboard, ServiceMonitors and PrometheusRule: off by default, on behind values, and every
PromQL expression they hold parses (tests/unit/promql.py) and names only metrics the code exports: the names are
collected from the registries the operator and the gateway build, never from a list kept by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentflow.events.publisher import EventMetrics
from agentflow.gateway.metrics import GatewayMetrics
from agentflow.services.metrics import Metrics
from agentflow.services.quality import QualityMetrics

from .promql import PromQLError, metric_names, parse, selectors
from .test_charts import CHART, GATEWAY, RELEASE, helm, render  # noqa: F401 (helm: the fixture)

DASHBOARD = ("ConfigMap", f"{RELEASE}-dashboard")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}


def registry() -> CollectorRegistry:
    """The metrics of the operator (with its quality watch and events publisher) and of the gateway, on one."""
    r = CollectorRegistry()
    metrics = Metrics(r)
    GatewayMetrics(r)
    EventMetrics(r)
    QualityMetrics(r)
    metrics.watch(lambda: [])
    return r


def exported() -> set[str]:
    """Every series name the registries expose (a counter ``x`` is ``x_total``, a histogram ``x_bucket``...)."""
    return set(exported_labels())


def exported_labels() -> dict[str, set[str]]:
    """Series name -> its label names. prometheus_client has no public way to list a metric's label names before
    it has a sample: read what each collector was declared with (``_labelnames``)."""
    r = registry()
    out: dict[str, set[str]] = {}
    for collector in list(r._collector_to_names):
        families = [collector] if hasattr(collector, "_labelnames") else list(collector.describe())
        for family in families:
            labels = set(getattr(family, "_labelnames", ()))
            name, type_ = getattr(family, "_name", getattr(family, "name", "")), getattr(family, "_type", "")
            type_ = type_ or getattr(family, "type", "")
            for suffix in SUFFIXES.get(type_, ("",)):
                out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    assert set(out) == {f.name + s for f in r.collect() for s in SUFFIXES.get(f.type, ("",))}
    return out


def check_labels(expr: str, labels: dict[str, set[str]]) -> None:
    """A matcher on a label the metric does not have selects nothing (or everything): a silent empty panel."""
    for name, matched in selectors(expr):
        assert name is not None, f"a selector without a metric name in {expr}"
        assert matched <= labels[name], f"{expr}: {name} has no label {sorted(matched - labels[name])}"


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in inner.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):  # label_values(METRIC, label): Grafana's, the metric must exist too
            exprs.append(query["query"].removeprefix("label_values(").split(",")[0])
    return exprs


def rule_exprs(rule: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]


def test_the_parser_refuses_what_prometheus_refuses() -> None:
    for bad in ("sum(rate(x[5m])", "rate(x[5])", "x >", "rated(x[5m])", "sum by (a (x)", "x{a=b}",
                "rate(x[$window])"):
        with pytest.raises(PromQLError):
            parse(bad)
    assert metric_names('sum by (le) (rate(a_bucket{x=~"$namespace"}[$__rate_interval])) / on() group_left '
                        'max(b) > bool 0 or vector(0)') == {"a_bucket", "b"}
    assert selectors('a{x="1", y!~"2"} + b') == [("a", {"x", "y"}), ("b", set())]
    with pytest.raises(AssertionError, match="has no label"):
        check_labels('agentflow_runs{namespace="team"}', exported_labels())
    assert exported_labels()["agentflow_step_duration_seconds_bucket"] == {"kind", "phase", "le"}
    assert exported_labels()["agentflow_steps"] == {"kind", "phase"}  # a collector's, from describe()


def test_monitoring_is_off_by_default(helm: Any) -> None:  # noqa: F811
    kinds = {kind for kind, _ in render(helm)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert DASHBOARD not in render(helm)


def test_the_dashboard_is_a_configmap_the_grafana_sidecar_loads(helm: Any) -> None:  # noqa: F811
    objects = render(helm, "--set", "metrics.dashboard.enabled=true")
    cm = objects[DASHBOARD]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["agentflow.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "agentflow.json").read_text())
    assert dashboard["uid"] == "agentflow-overview" and dashboard["title"] == "AgentFlow"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    custom = render(helm, "--set", "metrics.dashboard.enabled=true", "--set", "metrics.dashboard.namespace=monitoring",
                    "--set", "metrics.dashboard.labels.grafana_dashboard=null",
                    "--set", "metrics.dashboard.labels.dashboards=agentflow",
                    "--set", "metrics.dashboard.annotations.grafana_folder=AgentFlow")[DASHBOARD]
    assert custom["metadata"]["namespace"] == "monitoring"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["labels"]["dashboards"] == "agentflow"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "AgentFlow"}


def test_every_dashboard_query_parses_and_names_exported_metrics() -> None:
    names = exported()
    labels = exported_labels()
    dashboard = json.loads((CHART / "dashboards" / "agentflow.json").read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 30
    used: set[str] = set()
    for expr in exprs:
        found = metric_names(expr)
        assert found, f"no metric in {expr}"
        assert found <= names, f"{expr} names {sorted(found - names)}, which no registry exports"
        check_labels(expr, labels)
        used |= found
    # what the issue asks the dashboard to show
    for name in ("agentflow_steps", "agentflow_step_duration_seconds_bucket", "agentflow_step_queue_depth",
                 "agentflow_workflow_duration_seconds_bucket", "agentflow_step_pod_start_seconds_bucket",
                 "agentflow_llm_tokens_total", "agentflow_llm_cost_usd_total", "agentflow_gateway_calls_total",
                 "agentflow_budget_used_ratio", "agentflow_events_lag_seconds", "agentflow_reconcile_errors_total",
                 "agentflow_quality_drifting", "agentflow_runs_stalled", "agentflow_runs_stuck_total"):
        assert name in used, name


def test_the_alerts_parse_name_exported_metrics_and_take_their_thresholds(helm: Any) -> None:  # noqa: F811
    names = exported()
    objects = render(helm, "--set", "metrics.prometheusRule.enabled=true",
                     "--set", "metrics.prometheusRule.labels.release=kps",
                     "--set-json", "metrics.prometheusRule.failureRatio=0.4")
    rule = objects[("PrometheusRule", RELEASE)]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "kps"
    alerts = dict(rule_exprs(rule))
    assert {"AgentFlowBudgetThreshold", "AgentFlowBudgetExhausted", "AgentFlowRunsStalled", "AgentFlowRunsStuck",
            "AgentFlowRunFailureRatio", "AgentFlowGatewayErrors", "AgentFlowEventsLagging",
            "AgentFlowQualityDrifting"} <= set(alerts)
    for alert, expr in alerts.items():
        found = metric_names(expr)
        assert found and found <= names, (alert, expr, sorted(found - names))
        check_labels(expr, exported_labels())
    assert alerts["AgentFlowRunFailureRatio"].endswith("> 0.4")
    assert alerts["AgentFlowBudgetThreshold"].endswith(">= 0.9")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical")
            assert r["annotations"]["summary"] and r["annotations"]["description"]


def test_service_monitors_scrape_the_operator_and_the_gateway(helm: Any) -> None:  # noqa: F811
    objects = render(helm, "--set", "metrics.serviceMonitor.enabled=true",
                     "--set", "metrics.serviceMonitor.labels.release=kps")
    monitor = objects[("ServiceMonitor", RELEASE)]
    service = objects[("Service", RELEASE)]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert ("ServiceMonitor", GATEWAY) not in objects
    with_gateway = render(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "gateway.enabled=true")
    gateway_monitor = with_gateway[("ServiceMonitor", GATEWAY)]
    gateway_service = with_gateway[("Service", GATEWAY)]
    assert gateway_monitor["spec"]["selector"]["matchLabels"].items() <= gateway_service["metadata"]["labels"].items()
    assert not gateway_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    no_metrics = render(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "gateway.enabled=true",
                        "--set", "gateway.metrics.enabled=false")
    assert ("ServiceMonitor", GATEWAY) not in no_metrics


@pytest.mark.parametrize(("option", "message"), [
    ("metrics.prometheusRule.failureRatio=2", "metrics.prometheusRule.failureRatio: Must be less than or equal to 1"),
    ("metrics.serviceMonitor.interval=often", "metrics.serviceMonitor.interval: Does not match pattern"),
    ("metrics.dashboard.enable=true", "Additional property enable is not allowed"),
])
def test_helm_rejects_a_bad_monitoring_value(helm: Any, option: str, message: str) -> None:  # noqa: F811
    from .test_charts import REQUIRED, run

    binary, charts = helm
    out = run(binary, "template", RELEASE, str(Path(charts) / "agentflow"), *REQUIRED, "--set", option, ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
