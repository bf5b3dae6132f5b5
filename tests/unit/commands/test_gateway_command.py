"""`agentflow gateway` flags: the metrics listener apart from the API (what the chart's NetworkPolicy relies on)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from agentflow.commands.gateway import EXIT_CONFIG, build_parser, main, start_metrics


def test_metrics_listen_defaults_to_its_own_port_and_can_be_turned_off() -> None:
    assert build_parser().parse_args([]).metrics_listen == "0.0.0.0:9091"
    assert build_parser().parse_args(["--metrics-listen", ""]).metrics_listen == ""
    assert build_parser().parse_args(["--metrics-listen", "127.0.0.1:9100"]).metrics_listen == "127.0.0.1:9100"


def test_the_metrics_listener_serves_the_registry_it_is_given() -> None:
    registry = CollectorRegistry()
    Counter("agentflow_gateway_calls", "calls", ["status"], registry=registry).labels("ok").inc()
    server, port = start_metrics("127.0.0.1:0", registry)
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        assert 'agentflow_gateway_calls_total{status="ok"} 1.0' in text
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_bad_metrics_address_is_a_config_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--postgres-dsn", "postgresql://x@y/z", "--metrics-listen", "nowhere"]) == EXIT_CONFIG
    assert "--metrics-listen 'nowhere': expected HOST:PORT" in capsys.readouterr().err
