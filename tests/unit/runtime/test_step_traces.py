"""A step pod's own spans: exported over OTLP/HTTP to a real receiver on loopback (tests/services/otlp.py decodes
the protobuf), parented on the attempt's TRACEPARENT, with the http tool's request under them and the tool
receiving that request's span as traceparent; a collector that is down or misconfigured never fails the step."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.runtime.logs import JsonLog
from agentflow.runtime.step import CALLBACK_URL_ENV, EXIT_DELIVERED, TOKEN_ENV, main, run_step
from agentflow.telemetry import attempt_ids, genai, parse_traceparent
from services.otlp import OtlpReceiver, otlp_receiver

from .callback_fake import FakeCallbackServer

TOKEN = "tok-7d1e0c9b8a7f6e5d4c3b2a1908f7e6d5"


class ToolServer:
    """An http tool on loopback recording each request's traceparent; answers ``status``."""

    def __init__(self) -> None:
        self.headers: list[str | None] = []
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.headers.append(self.headers.get("traceparent"))
                payload = json.dumps({"ok": True}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/act?secret=s3cr3t"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


def manifests(url: str) -> str:
    return f"""
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {{name: worker, labels: {{team: ops}}}}
spec:
  role: worker
  instructions: Act.
  model: {{name: openai/gpt-4o-mini}}
  tools: [act]
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: ops-tools}}
spec:
  agentSelector: {{matchLabels: {{team: ops}}}}
  tools:
    - name: act
      http: {{url: "{url}", method: POST}}
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {{name: ops}}
spec:
  steps:
    - {{name: act, kind: tool, tool: act, agentRef: {{name: worker}}}}
"""


def attempt(url: str) -> dict[str, Any]:
    request = {"runId": "run-uid-1", "node": "act", "step": "act", "kind": "tool", "attempt": 2,
               "inputs": {"x": 1}, "deadline": None}
    return {"request": request, "manifests": manifests(url), "workflow": "ops"}


PARENT = attempt_ids("run-uid-1", "act", 2)


def pod_env(callback: FakeCallbackServer, **extra: str) -> dict[str, str]:
    return {CALLBACK_URL_ENV: callback.url, TOKEN_ENV: TOKEN, "AGENTFLOW_MODEL_MODE": "offline",
            "TRACEPARENT": PARENT.traceparent, "AGENTFLOW_NODE": "act", "AGENTFLOW_ATTEMPT": "2",
            "HOSTNAME": "ops-act-2-abcde", **extra}


def test_a_pod_exports_its_span_under_the_attempt_and_the_tool_request_under_it(
        tool_server: ToolServer, receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]) -> None:
    callback = FakeCallbackServer(attempt(tool_server.url), TOKEN).start()
    try:
        env = pod_env(callback, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces")
        assert main([], env) == EXIT_DELIVERED
    finally:
        callback.stop()
    assert callback.results[0]["error"] is None
    receiver.wait_for("run_step act")  # flushed before the process ends, not after
    pod = next(s for s in receiver.spans if s.name == "run_step act")
    assert pod.service == "agentflow-step"
    assert (pod.trace_id, pod.parent_id) == (f"{PARENT.trace_id:032x}", f"{PARENT.span_id:016x}")
    assert pod.attributes[genai.NODE] == "act" and pod.attributes[genai.ATTEMPT] == 2
    assert pod.attributes["k8s.pod.name"] == "ops-act-2-abcde"
    request = next(s for s in receiver.spans if s.name == "POST")
    assert request.parent_id == pod.span_id and request.trace_id == pod.trace_id
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["server.address"] == "127.0.0.1"
    assert "s3cr3t" not in json.dumps(request.attributes)  # never the query string
    [header] = tool_server.headers
    ids = parse_traceparent(header)
    assert ids is not None and (f"{ids.trace_id:032x}", f"{ids.span_id:016x}") == (request.trace_id,
                                                                                  request.span_id)
    assert "tracing" not in capsys.readouterr().err


def test_a_failed_tool_request_and_step_are_failed_spans(tool_server: ToolServer, receiver: OtlpReceiver) -> None:
    tool_server.status = 400
    callback = FakeCallbackServer(attempt(tool_server.url), TOKEN).start()
    try:
        assert main([], pod_env(callback, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces")) == \
            EXIT_DELIVERED
    finally:
        callback.stop()
    assert callback.results[0]["error"]["type"] == "ToolHttpError"
    receiver.wait_for("run_step act")
    request = next(s for s in receiver.spans if s.name == "POST")
    assert request.attributes["http.response.status_code"] == 400
    assert request.attributes[genai.ERROR_TYPE] == "ToolHttpError"
    pod = next(s for s in receiver.spans if s.name == "run_step act")
    assert pod.attributes[genai.ERROR_TYPE] == "ToolHttpError"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("endpoint, logged", [
    (f"http://127.0.0.1:{_closed_port()}/v1/traces", None),  # nobody listens: spans dropped, step delivered
    ("ftp://collector:4318", "tracing.invalid"),             # unusable: said once, tracing off
])
def test_a_collector_down_or_misconfigured_never_fails_the_step(
        tool_server: ToolServer, endpoint: str, logged: str | None) -> None:
    callback = FakeCallbackServer(attempt(tool_server.url), TOKEN).start()
    stream = io.StringIO()
    try:
        import asyncio

        code = asyncio.run(run_step(callback.url, TOKEN, log=JsonLog(stream),
                                    env=pod_env(callback, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint)))
    finally:
        callback.stop()
    assert code == EXIT_DELIVERED and callback.results[0]["error"] is None
    seen = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert (logged in seen) if logged else all(not e.startswith("tracing") for e in seen)
    assert tool_server.headers and parse_traceparent(tool_server.headers[0]) is not None  # context still passed on
