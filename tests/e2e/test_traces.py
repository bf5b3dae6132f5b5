"""Traces on a real cluster: the operator exports a fan-out run's trace over OTLP/HTTP to a real receiver on this
machine (tests/services/otlp.py decodes the protobuf), sets status.traceId and status.traceUrl, and gives each step
pod its attempt's TRACEPARENT, which the pod's HTTP tool call carries as its traceparent header."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.telemetry import attempt_ids, genai, parse_traceparent, run_ids, trace_id
from services.otlp import OtlpReceiver, otlp_receiver

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import Operator, counting_workflow, crds, step_images, wait_finished  # noqa: F401

pytestmark = pytest.mark.e2e

PREFIX = "tr-"
ITEMS = 4
TEMPLATE = "https://jaeger.example.com/trace/{trace_id}"


class HeaderServer:
    """An HTTP tool endpoint recording each call's Idempotency-Key and traceparent."""

    def __init__(self, host: str) -> None:
        self.calls: list[tuple[str, str | None]] = []
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    outer.calls.append((self.headers.get("Idempotency-Key", ""), self.headers.get("traceparent")))
                payload = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/count"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:  # on loopback: the operator runs on this machine
        yield r


@pytest.fixture(scope="module")
def traced_operator(cluster: Cluster, crds: None, step_images: None,  # noqa: F811
                    postgres_dsn: str, receiver: OtlpReceiver,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("traces") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*", "--otlp-endpoint", receiver.url,
                   "--trace-url-template", TEMPLATE])
    op.start()
    yield op
    op.stop()


def test_a_fan_out_run_is_one_trace_from_operator_to_step_pods(cluster: Cluster, traced_operator: Operator,
                                                               receiver: OtlpReceiver) -> None:
    assert cluster.host_address
    server = HeaderServer(cluster.host_address)
    with fresh_namespace(cluster, PREFIX) as namespace:
        try:
            cluster.apply(counting_workflow(server.url, ITEMS), namespace)
            wf = wait_finished(cluster, namespace, "exactly-once", timeout=600)
            assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)
            uid = wf["metadata"]["uid"]
            hex_id = f"{trace_id(uid):032x}"
            assert wf["status"]["traceId"] == hex_id
            assert wf["status"]["traceUrl"] == TEMPLATE.replace("{trace_id}", hex_id)
            described = cluster.kubectl("describe", "workflows.agentflow.dev", "exactly-once", "-n", namespace).stdout
            assert hex_id in described

            receiver.wait_for("invoke_workflow exactly-once", timeout=60)
            spans = [s for s in receiver.spans if s.trace_id == hex_id]
            root = next(s for s in spans if s.name == "invoke_workflow exactly-once")
            assert root.span_id == f"{run_ids(uid).span_id:016x}" and root.service == "agentflow-operator"
            steps = [s for s in spans if s.parent_id == root.span_id]
            assert sorted(str(s.attributes[genai.NODE]) for s in steps) == sorted(
                ["first", "last", *(f"fan[{i}]" for i in range(ITEMS))])
            assert all(s.name == "execute_tool count" for s in steps)

            # Each pod's tool call carried its attempt's span as traceparent (TRACEPARENT on the pod).
            assert len(server.calls) == ITEMS + 2
            for key, header in server.calls:
                _, node, attempt = key.rsplit("/", 2)
                assert parse_traceparent(header) == attempt_ids(uid, node, int(attempt)), (key, header)
        finally:
            server.close()
