"""Traces on a real cluster: the operator exports a fan-out run's trace over OTLP/HTTP to a real receiver on this
machine (tests/services/otlp.py decodes the protobuf), sets status.traceId and status.traceUrl, and gives each step
pod its attempt's TRACEPARENT and the collector's address (--step-otlp-endpoint; the pod's NetworkPolicy allows
it). Each gVisor step pod exports its own span under its attempt's, its HTTP tool request under that (the tool
receives that request's span as traceparent), and a model call goes on to the gateway, whose chat span is the
pod span's child: one trace from the operator, the step pods and the gateway."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.telemetry import attempt_ids, genai, parse_traceparent, run_ids, trace_id
from services.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import Operator, counting_workflow, free_port, wait_finished

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
def receiver(cluster: Cluster) -> Iterator[OtlpReceiver]:
    # On the address pods reach this machine at: the operator (on this machine) and the step pods export there.
    with otlp_receiver(cluster.host_address or "127.0.0.1") as r:
        yield r


@pytest.fixture(scope="module")
def traced_operator(cluster: Cluster, crds: None, step_images: None,
                    postgres_dsn: str, receiver: OtlpReceiver,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    gateway_port = free_port(host)
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("traces") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*", "--otlp-endpoint", receiver.url,
                   "--step-otlp-endpoint", receiver.url, "--trace-url-template", TEMPLATE,
                   # model calls go from the pods to this operator's gateway (its offline upstream)
                   "--step-env", "AGENTFLOW_MODEL_MODE=live", "--gateway-listen", f"{host}:{gateway_port}",
                   "--gateway-url", f"http://{host}:{gateway_port}", "--gateway-upstream", "offline"])
    op.start()
    yield op
    op.stop()


def wait_span(receiver: OtlpReceiver, trace: str, name: str, parent: str, timeout: float = 60) -> ReceivedSpan:
    """The span ``name`` of ``trace`` whose parent is ``parent`` (pods flush theirs as they end)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in list(receiver.spans) if s.trace_id == trace and s.name == name and s.parent_id == parent]
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            seen = sorted((s.name, s.parent_id) for s in receiver.spans if s.trace_id == trace)
            raise AssertionError(f"no span {name!r} under {parent} in trace {trace}; got {seen}")
        time.sleep(0.2)


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

            # Each step pod exported its span under its attempt's (TRACEPARENT on the pod), and its tool request
            # under that; the tool got the request's span as traceparent.
            assert len(server.calls) == ITEMS + 2
            for key, header in server.calls:
                _, node, attempt = key.rsplit("/", 2)
                attempt_span = f"{attempt_ids(uid, node, int(attempt)).span_id:016x}"
                pod = wait_span(receiver, hex_id, f"run_step {node}", attempt_span)
                assert pod.service == "agentflow-step" and pod.attributes[genai.NODE] == node
                assert str(pod.attributes["k8s.pod.name"]).startswith("exactly-once-")
                request = wait_span(receiver, hex_id, "POST", pod.span_id)
                assert request.attributes["http.response.status_code"] == 200
                ids = parse_traceparent(header)
                assert ids is not None and f"{ids.span_id:016x}" == request.span_id, (key, header)
        finally:
            server.close()


def model_workflow() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "writer"},
         "spec": {"role": "writer", "instructions": "Answer briefly.", "model": {"name": "openai/gpt-4o-mini"},
                  "pii": {"redact": False}}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptVersion", "metadata": {"name": "answer-v1"},
         "spec": {"prompt": "answer", "version": "1",
                  "messages": [{"role": "user", "content": "Say hello to ${{ inputs.who }}."}]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "traced-model"},
         "spec": {"inputs": {"who": "the platform team"},
                  "steps": [{"name": "answer", "kind": "llm", "agentRef": {"name": "writer"},
                             "promptRef": {"name": "answer-v1"}, "inputs": {"who": "${{ inputs.who }}"}}]}},
    ]


def test_a_model_call_is_traced_from_the_operator_through_the_step_pod_to_the_gateway(
        cluster: Cluster, traced_operator: Operator, receiver: OtlpReceiver) -> None:
    with fresh_namespace(cluster, PREFIX) as namespace:
        cluster.apply(model_workflow(), namespace)
        wf = wait_finished(cluster, namespace, "traced-model", timeout=600)
        assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)
        uid = wf["metadata"]["uid"]
        hex_id = f"{trace_id(uid):032x}"
        attempt_span = f"{attempt_ids(uid, 'answer', 1).span_id:016x}"
        # The operator's batch exporter sends the attempt's span after the status says Succeeded: wait for it.
        attempt = wait_span(receiver, hex_id, "invoke_agent writer", f"{run_ids(uid).span_id:016x}")
        assert attempt.span_id == attempt_span and attempt.service == "agentflow-operator"
        pod = wait_span(receiver, hex_id, "run_step answer", attempt_span)
        assert pod.service == "agentflow-step"
        chat = wait_span(receiver, hex_id, "chat openai/gpt-4o-mini", pod.span_id)
        assert chat.attributes[genai.OPERATION_NAME] == "chat"
        assert chat.attributes[genai.REQUEST_MODEL] == "openai/gpt-4o-mini"
        assert chat.attributes[genai.AGENT_NAME] == "writer"
        assert int(chat.attributes[genai.USAGE_INPUT_TOKENS]) > 0  # type: ignore[call-overload]
        assert genai.INPUT_MESSAGES not in chat.attributes  # content is opt-in
