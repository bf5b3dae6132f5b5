"""Traces exported for real: a local run (the CLI, step subprocesses calling the runner's gateway over HTTP) sends
its spans over OTLP/HTTP to a loopback receiver that decodes the protobuf (tests/services/otlp.py); with the
collector unreachable the run still succeeds, in a time measured against the same run untraced."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from agentflow.telemetry import genai
from services.otlp import ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples/manifests/quickstart.yaml"


def _run(tmp_path: Path, extra_env: Mapping[str, str], *flags: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"PYTHONPATH": str(REPO / "operator"), "AGENTFLOW_MODEL_MODE": "offline", **extra_env})
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(tmp_path / "state"), "run",
                           str(QUICKSTART), "--json", *flags], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    return done, time.monotonic() - started


def _parent(spans: list[ReceivedSpan], span: ReceivedSpan) -> ReceivedSpan | None:
    return next((s for s in spans if s.span_id == span.parent_id), None)


def test_a_local_run_exports_one_trace_over_otlp_http_with_step_processes_in_it(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        done, _ = _run(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}, "--executor", "subprocess")
        assert done.returncode == 0, done.stderr
        receiver.wait_for("invoke_workflow quickstart")
        spans = list(receiver.spans)
    assert len({s.trace_id for s in spans}) == 1
    assert {s.service for s in spans} == {"agentflow-runner"}
    assert {s.schema_url for s in spans} == {f"https://opentelemetry.io/schemas/{genai.SEMCONV_VERSION}"}
    root = next(s for s in spans if s.name == "invoke_workflow quickstart")
    assert root.parent_id is None and root.attributes[genai.OPERATION_NAME] == "invoke_workflow"
    assert all(_parent(spans, s) is not None for s in spans if s is not root), "every span's parent arrived"
    steps = {s.attributes.get(genai.NODE): s for s in spans if _parent(spans, s) is root}
    assert set(steps) == {"classify", "search", "respond", "act"}
    assert steps["classify"].name == "invoke_agent quickstart-agent"  # its Agent has tools: an agent loop
    assert steps["search"].name == "execute_tool quickstart-kb"
    # Each step process got its attempt's TRACEPARENT and sent it on as the traceparent header: the runner's
    # gateway parented its chat span on the attempt's span, which ran in a step process.
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert chats
    for chat in chats:
        attempt = _parent(spans, chat)
        assert attempt is not None and attempt.attributes[genai.EXECUTOR] == "SubprocessExecutor"
        assert chat.attributes[genai.OPERATION_NAME] == "chat"
        assert chat.attributes[genai.PROVIDER_NAME] and chat.attributes[genai.REQUEST_MODEL]
        assert chat.attributes[genai.USAGE_INPUT_TOKENS] > 0
        assert genai.INPUT_MESSAGES not in chat.attributes


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_collector_neither_fails_nor_holds_up_a_run(tmp_path: Path) -> None:
    plain, plain_seconds = _run(tmp_path / "plain", {})
    assert plain.returncode == 0, plain.stderr
    port = _closed_port()  # nothing listens there: every export is refused
    traced, traced_seconds = _run(tmp_path / "traced", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert traced.returncode == 0, traced.stderr
    print(f"\nquickstart via the CLI: untraced {plain_seconds:.2f} s, collector unreachable {traced_seconds:.2f} s "
          f"(the exit waits at most 2 s for the last spans)")
    # A bound, not a benchmark: the flush at exit is capped at 2 s; the rest is process start-up noise.
    assert traced_seconds < plain_seconds + 8.0
