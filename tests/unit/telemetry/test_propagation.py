"""Trace context across boundaries: the gateway over HTTP on loopback, HTTP tools; content off by default, redacted
when on; the settings."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from agentflow.gateway.server import AuthError, start_gateway
from agentflow.gateway.service import Attribution, Gateway, GatewayError
from agentflow.llm import ChatRequest, GatewayClient
from agentflow.models import ToolSpec
from agentflow.security.pii import Detection, text_redactor
from agentflow.storage.memory_ledger import MemoryLedger
from agentflow.telemetry import (
    TraceSettings,
    attached,
    attempt_ids,
    genai,
    parse_traceparent,
    run_ids,
    trace_id,
    traceparent,
)
from agentflow.testing import recording_tracing
from agentflow.tools import ToolRunner

from ..gateway.helpers import Scripted, line, provider, static_budgets, who

TOKEN = "attempt-token"
EMAIL = re.compile(r"[\w.]+@[\w.]+\.\w+")


class EmailDetector:
    """A Detector finding e-mail addresses only (Presidio takes seconds to load)."""

    def detect(self, text: str, entities: Sequence[str], min_score: float) -> list[Detection]:
        return [Detection("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in EMAIL.finditer(text)]


async def _authenticate(token: str) -> Attribution:
    if token != TOKEN:
        raise AuthError("bad token")
    return who()


def _request(text: str = "hello") -> ChatRequest:
    return ChatRequest(model="openai/gpt-4o-mini", messages=({"role": "user", "content": text},))


async def test_the_gateway_over_http_parents_its_spans_on_the_callers_traceparent() -> None:
    tracing, recorded = recording_tracing()
    gateway = Gateway(ledger=MemoryLedger(), provider=provider(Scripted()), budgets=static_budgets(line()),
                      tracing=tracing)
    server = await start_gateway(gateway, _authenticate)
    client = GatewayClient(f"http://127.0.0.1:{server.port}", TOKEN)
    caller = attempt_ids("run-1", "classify", 2)
    try:
        with attached(caller):
            answer = await client.complete(_request())
        untraced = await client.complete(_request("no context"))
    finally:
        await client.close()
        await server.stop()
    assert answer.text
    assert untraced.text
    chat, other = recorded.named("chat")
    assert chat.context.trace_id == trace_id("run-1") and chat.parent.span_id == caller.span_id
    assert chat.parent.is_remote
    assert other.parent is None and other.context.trace_id != trace_id("run-1")  # no header: a trace of its own
    assert chat.name == "chat openai/gpt-4o-mini"
    assert chat.attributes[genai.OPERATION_NAME] == "chat"
    assert chat.attributes[genai.PROVIDER_NAME] == "openai"
    assert chat.attributes[genai.REQUEST_MODEL] == chat.attributes[genai.RESPONSE_MODEL] == "openai/gpt-4o-mini"
    assert chat.attributes[genai.USAGE_INPUT_TOKENS] == 10 and chat.attributes[genai.USAGE_OUTPUT_TOKENS] == 5
    assert chat.attributes[genai.AGENT_NAME] == "triage"
    reserve = [s for s in recorded.named("budget.reserve") if s.parent.span_id == chat.context.span_id]
    assert len(reserve) == 1 and reserve[0].attributes[genai.BUDGET_LINES] == 1
    assert genai.INPUT_MESSAGES not in chat.attributes and genai.OUTPUT_MESSAGES not in chat.attributes


async def test_a_refused_call_is_a_failed_span_with_its_error_type() -> None:
    tracing, recorded = recording_tracing()
    gateway = Gateway(ledger=MemoryLedger(), provider=provider(Scripted()),
                      budgets=static_budgets(line(limit_usd=None, limit_tokens=1)), tracing=tracing)
    with attached(attempt_ids("run-1", "classify", 1)), pytest.raises(GatewayError):
        await gateway.complete(who(), _request())
    (chat,) = recorded.named("chat")
    (reserve,) = recorded.named("budget.reserve")
    assert chat.attributes[genai.ERROR_TYPE] == "BudgetExceeded" and not chat.status.is_ok
    assert reserve.attributes[genai.ERROR_TYPE] == "BudgetExceeded"


async def test_content_is_recorded_only_when_opted_in_and_then_redacted() -> None:
    text = "refund ann.lee@example.com please"
    off, recorded_off = recording_tracing(redact=text_redactor(EmailDetector()))
    await Gateway(ledger=MemoryLedger(), provider=provider(Scripted()), tracing=off).complete(who(), _request(text))
    (chat,) = recorded_off.named("chat")
    assert genai.INPUT_MESSAGES not in chat.attributes

    on, recorded_on = recording_tracing(content=True, redact=text_redactor(EmailDetector()))
    await Gateway(ledger=MemoryLedger(), provider=provider(Scripted()), tracing=on).complete(who(), _request(text))
    (chat,) = recorded_on.named("chat")
    messages = str(chat.attributes[genai.INPUT_MESSAGES])
    assert "ann.lee@example.com" not in messages and "<EMAIL_ADDRESS_" in messages and "refund" in messages
    assert "answer from openai/gpt-4o-mini" in str(chat.attributes[genai.OUTPUT_MESSAGES])

    # Content on without a redactor records nothing (never the raw text).
    bare, recorded_bare = recording_tracing(content=True)
    await Gateway(ledger=MemoryLedger(), provider=provider(Scripted()), tracing=bare).complete(who(), _request(text))
    assert genai.INPUT_MESSAGES not in recorded_bare.named("chat")[0].attributes


@pytest.fixture
def http_tool_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/act", seen
    finally:
        server.shutdown()


async def test_an_http_tool_call_carries_the_attempts_traceparent(
        http_tool_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = http_tool_server
    tool = ToolSpec.model_validate({"name": "act", "http": {"url": url, "method": "POST"}})
    runner = ToolRunner()
    ids = attempt_ids("run-7", "act", 1)
    with attached(ids):
        await runner.call(tool, {"x": 1}, idempotency_key="run-7/act/1", deadline=None)
    await runner.call(tool, {"x": 2}, idempotency_key="run-7/act/2", deadline=None)
    headers = [{k.lower(): v for k, v in h.items()} for h in seen]
    assert parse_traceparent(headers[0]["traceparent"]) == ids
    assert "traceparent" not in headers[1]  # no context, no header


def test_ids_are_derived_from_the_run_and_stable() -> None:
    assert trace_id("uid-1") == trace_id("uid-1") != trace_id("uid-2")
    assert attempt_ids("uid-1", "a", 1) != attempt_ids("uid-1", "a", 2) != attempt_ids("uid-1", "b", 1)
    assert run_ids("uid-1").trace_id == attempt_ids("uid-1", "a", 1).trace_id
    ids = attempt_ids("uid-1", "classify[3]", 2)
    assert parse_traceparent(ids.traceparent) == ids
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", ids.traceparent)
    assert parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert parse_traceparent("not a traceparent") is None and parse_traceparent(None) is None
    assert traceparent(1, 2) == "00-" + "0" * 31 + "1-" + "0" * 15 + "2-01"


def test_settings_come_from_flags_then_otel_variables_and_are_off_without_an_endpoint() -> None:
    assert not TraceSettings.from_env({}).enabled
    base = TraceSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert base.endpoint == "http://collector:4318/v1/traces"
    full = TraceSettings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom",
                                   "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"})
    assert full.endpoint == "http://c:4318/custom"
    flag = TraceSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"},
                                  endpoint="http://flag:4318/")
    assert flag.endpoint == "http://flag:4318/v1/traces"
    assert not TraceSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                       "OTEL_SDK_DISABLED": "true"}).enabled
    assert not TraceSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                       "OTEL_TRACES_EXPORTER": "none"}).enabled
    named = TraceSettings.from_env({"OTEL_SERVICE_NAME": "team-a-runner", "AGENTFLOW_TRACE_CONTENT": "true"})
    assert named.service_name == "team-a-runner" and named.content
    assert not TraceSettings.from_env({}).content
    with pytest.raises(ValueError, match=r"\{trace_id\}"):
        TraceSettings.from_env({}, url_template="https://jaeger/trace/")
    with pytest.raises(ValueError, match="4318"):
        TraceSettings(endpoint="collector:4317")
    tracing, _ = recording_tracing(url_template="https://jaeger.example/trace/{trace_id}")
    assert tracing.trace_url("ab" * 16) == "https://jaeger.example/trace/" + "ab" * 16


async def test_embeddings_are_a_span_of_their_own() -> None:
    from agentflow.gateway.embeddings import Embeddings
    from agentflow.models import Agent

    tracing, recorded = recording_tracing()
    gateway = Gateway(ledger=MemoryLedger(), provider=provider(Scripted()), tracing=tracing)
    remembering = Agent.model_validate({"metadata": {"name": "triage"}, "spec": {
        "role": "triage", "model": {"name": "openai/gpt-4o-mini"},
        "memory": {"longTerm": {"embeddingModel": "agentflow/hashing-v1"}}}})
    with attached(attempt_ids("run-1", "classify", 1)):
        result = await Embeddings(gateway).embed(who(remembering), "agentflow/hashing-v1", ["order 4411"])
    assert result.vectors
    (span,) = recorded.named("embeddings")
    assert span.attributes[genai.OPERATION_NAME] == "embeddings"
    assert span.attributes[genai.REQUEST_MODEL] == "agentflow/hashing-v1"
    assert span.attributes[genai.AGENT_NAME] == "triage"
    assert span.parent.span_id == attempt_ids("run-1", "classify", 1).span_id
