"""`agentflow step` end to end against a fake callback server: tool and llm steps, retries, refusals,
configuration errors, deadlines, and logs that are JSON lines without the token."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.runtime.client import CallbackClient, CallbackRefused, HttpResponse, RetryPolicy, TransportError
from agentflow.runtime.logs import REDACTED, JsonLog
from agentflow.runtime.step import (
    CALLBACK_URL_ENV,
    DELIVERY_MIN_SECONDS,
    EXIT_CONFIG,
    EXIT_DELIVERED,
    EXIT_UNDELIVERED,
    FETCH_PATIENCE_SECONDS,
    TOKEN_ENV,
    ConfigError,
    main,
    read_config,
    run_step,
)

from .callback_fake import FakeCallbackServer

TOKEN = "tok-3f9c1e7a5b2d4c6e8f0a1b2c3d4e5f60"

MANIFESTS = """
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: triage, labels: {team: support}}
spec:
  role: support triage specialist
  instructions: Classify tickets.
  model: {name: openai/gpt-4o-mini}
  tools: [echo-tool]
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptVersion
metadata: {name: classify-v1}
spec:
  prompt: classify
  version: "1"
  messages:
    - {role: user, content: "Ticket: ${{ inputs.ticket }}"}
  outputSchema:
    type: object
    required: [category, confidence]
    properties:
      category: {enum: [billing, technical, other]}
      confidence: {type: number, minimum: 0, maximum: 1}
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: support-tools}
spec:
  agentSelector: {matchLabels: {team: support}}
  tools:
    - name: echo-tool
      builtin: {name: echo}
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: support}
spec:
  inputs: {ticket: "I was charged twice, please refund"}
  steps:
    - {name: classify, kind: llm, agentRef: {name: triage}, promptRef: {name: classify-v1}}
    - {name: echo, kind: tool, tool: echo-tool, agentRef: {name: triage}}
"""


def attempt(step: str, kind: str, inputs: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
    request = {
        "runId": "support-1",
        "node": step,
        "step": step,
        "kind": kind,
        "attempt": 1,
        "inputs": inputs,
        "deadline": deadline,
    }
    return {"request": request, "manifests": MANIFESTS, "workflow": "support"}


TOOL_ATTEMPT = attempt("echo", "tool", {"message": "hello", "n": 3})
LLM_ATTEMPT = attempt("classify", "llm", {"ticket": "I was charged twice, please refund"})


@pytest.fixture
def server() -> Iterator[FakeCallbackServer]:
    fake = FakeCallbackServer(TOOL_ATTEMPT, TOKEN).start()
    try:
        yield fake
    finally:
        fake.stop()


def env_for(fake: FakeCallbackServer, **extra: str) -> dict[str, str]:
    return {CALLBACK_URL_ENV: fake.url, TOKEN_ENV: TOKEN, "AGENTFLOW_MODEL_MODE": "offline", **extra}


def log_lines(text: str) -> list[dict[str, Any]]:
    """Every stderr line is one JSON object with the standard fields, and the token is nowhere."""
    assert TOKEN not in text
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        assert {"time", "level", "event", "message"} <= set(record)
    return records


def events(records: list[dict[str, Any]]) -> list[str]:
    return [r["event"] for r in records]


class FastRetry:
    """Virtual time: records the backoff delays instead of sleeping; runs a hook before each."""

    def __init__(self, hook: Any = None) -> None:
        self.delays: list[float] = []
        self.hook = hook
        self.now = time.time()

    def clock(self) -> float:
        return self.now

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        if self.hook is not None:
            self.hook(len(self.delays))


def run(
    fake: FakeCallbackServer, sleep: FastRetry, env: dict[str, str] | None = None, retry: RetryPolicy | None = None
) -> tuple[int, list[dict[str, Any]]]:
    stream = io.StringIO()
    code = asyncio.run(
        run_step(fake.url, TOKEN, env=env or env_for(fake), retry=retry, sleep=sleep, log=JsonLog(stream),
                 clock=sleep.clock)
    )
    return code, log_lines(stream.getvalue())


class TestEndToEnd:
    def test_tool_step_runs_and_its_result_is_delivered(
        self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main([], env_for(server)) == EXIT_DELIVERED
        [result] = server.results
        assert result["error"] is None
        assert result["output"] == {"message": "hello", "n": 3}
        assert [c["kind"] for c in result["calls"]] == ["tool"]
        captured = capsys.readouterr()
        assert captured.out == ""
        records = log_lines(captured.err)
        assert events(records) == ["attempt.fetching", "step.started", "step.succeeded", "result.delivered"]
        assert records[1]["runId"] == "support-1" and records[1]["kind"] == "tool"
        assert "hello" not in captured.err  # inputs and outputs stay out of the logs
        assert server.requests == [("GET", "/v1/attempt"), ("POST", "/v1/attempt/result")]

    def test_llm_step_runs_on_the_offline_model(
        self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server.attempt = LLM_ATTEMPT
        assert main(["--callback-url", server.url], env_for(server, **{CALLBACK_URL_ENV: ""})) == EXIT_DELIVERED
        [result] = server.results
        assert result["error"] is None
        assert result["output"]["category"] == "billing"
        assert 0 <= result["output"]["confidence"] <= 1
        [call] = result["calls"]
        assert (call["kind"], call["name"]) == ("llm", "agentflow/offline")
        assert events(log_lines(capsys.readouterr().err))[-1] == "result.delivered"

    def test_a_failing_step_is_delivered_and_exits_0(
        self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server.attempt = attempt("classify", "llm", {})  # the prompt needs inputs.ticket
        assert main([], env_for(server)) == EXIT_DELIVERED
        [result] = server.results
        assert result["output"] is None
        assert result["error"]["type"] == "PromptRenderError"
        records = log_lines(capsys.readouterr().err)
        assert "step.failed" in events(records)
        assert records[-1]["ok"] is False

    def test_an_expired_deadline_is_honoured(self, server: FakeCallbackServer) -> None:
        server.attempt = attempt("echo", "tool", {"message": "late"}, deadline=time.time() - 1)
        assert main([], env_for(server)) == EXIT_DELIVERED
        [result] = server.results
        assert result["error"]["type"] == "DeadlineExceeded"
        assert result["error"]["retryable"] is True

    def test_an_unusable_attempt_is_reported_as_a_non_retryable_failure(
        self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server.attempt = {**TOOL_ATTEMPT, "workflow": "no-such-workflow"}
        assert main([], env_for(server)) == EXIT_DELIVERED
        [result] = server.results
        assert result["error"]["type"] == "ExecutorError"
        assert result["error"]["retryable"] is False
        assert "no-such-workflow" in result["error"]["message"]
        assert "attempt.invalid" in events(log_lines(capsys.readouterr().err))

    def test_an_output_json_cannot_carry_becomes_a_failure(self, server: FakeCallbackServer) -> None:
        server.attempt = json.dumps(attempt("echo", "tool", {"message": "x", "score": float("nan")}))
        assert main([], env_for(server)) == EXIT_DELIVERED
        [result] = server.results
        assert result["output"] is None
        assert result["error"]["type"] == "InvalidOutput" and "NaN" in result["error"]["message"]
        assert [c["response"] for c in result["calls"]] == [None]

    def test_a_result_already_stored_counts_as_delivered(self, server: FakeCallbackServer) -> None:
        assert main([], env_for(server)) == EXIT_DELIVERED
        assert main([], env_for(server)) == EXIT_DELIVERED  # the server answers 200 the second time
        assert len(server.results) == 2


class TestRetries:
    def test_server_down_then_starting_then_up(self) -> None:
        fake = FakeCallbackServer(TOOL_ATTEMPT, TOKEN).start(listen=False)  # bound, not listening: refused
        fake.fail.append(503)

        def come_up(n: int) -> None:
            if n == 2:
                fake.listen()

        sleep = FastRetry(come_up)
        try:
            code, records = run(fake, sleep)
        finally:
            fake.stop()
        assert code == EXIT_DELIVERED
        assert len(fake.results) == 1
        # refused, refused, 503, then the GET; the delays grow (1, 2, 4 s +/- 20% jitter)
        assert len(sleep.delays) == 3
        assert all(0.8 * 2**i <= d <= 1.2 * 2**i for i, d in enumerate(sleep.delays))
        retries = [r for r in records if r["event"] == "callback.retry"]
        assert len(retries) == 3 and retries[0]["level"] == "warning"
        assert "503" in retries[2]["message"]

    def test_posting_the_result_is_retried(self, server: FakeCallbackServer) -> None:
        server.fail_post.append(502)
        sleep = FastRetry()
        code, records = run(server, sleep)
        assert code == EXIT_DELIVERED
        assert len(server.results) == 1
        assert len(sleep.delays) == 1
        assert [r["request"] for r in records if r["event"] == "callback.retry"] == ["POST /v1/attempt/result"]

    def test_retry_after_lengthens_the_delay(self, server: FakeCallbackServer) -> None:
        server.fail.append(503)
        server.retry_after = "5"
        sleep = FastRetry()
        code, _ = run(server, sleep)
        assert code == EXIT_DELIVERED
        assert sleep.delays == [5.0]

    def test_the_attempt_is_asked_for_about_two_minutes_then_exit_1(self) -> None:
        """Nothing ran, so giving up is safe; but an operator restarting a few times in a row is away for longer
        than six tries, and each attempt given up spends one of the step's tries."""
        fake = FakeCallbackServer(TOOL_ATTEMPT, TOKEN).start(listen=False)
        sleep = FastRetry()
        try:
            code, records = run(fake, sleep)
        finally:
            fake.stop()
        assert code == EXIT_UNDELIVERED
        assert 24 <= sum(sleep.delays[:5]) <= 36  # the first six tries: about 30 s
        assert 100 <= sum(sleep.delays) <= FETCH_PATIENCE_SECONDS
        assert max(sleep.delays) <= 15
        last = records[-1]
        assert last["event"] == "attempt.unavailable" and last["level"] == "error"
        assert f"{len(sleep.delays) + 1} tries" in last["message"] and "nothing ran" in last["message"]

    def test_a_result_is_delivered_until_the_attempts_deadline(self) -> None:
        """Once the step ran, a result given up on fails the pod and the operator runs the step again, side
        effects included: the pod keeps delivering while its attempt may still end."""
        deadline = time.time() + 600
        fake = FakeCallbackServer(attempt("echo", "tool", {"message": "hi"}, deadline), TOKEN).start()
        fake.fail_post.extend([503] * 20)  # about 4 minutes of an operator that is away
        sleep = FastRetry()
        try:
            code, _ = run(fake, sleep)
        finally:
            fake.stop()
        assert code == EXIT_DELIVERED
        assert len(fake.results) == 1 and len(sleep.delays) == 20
        assert 200 <= sum(sleep.delays) <= 600

    def test_a_result_without_deadline_is_retried_for_a_minute_then_exit_1(self) -> None:
        fake = FakeCallbackServer(TOOL_ATTEMPT, TOKEN).start()
        fake.fail_post.extend([503] * 100)
        sleep = FastRetry()
        try:
            code, records = run(fake, sleep)
        finally:
            fake.stop()
        assert code == EXIT_UNDELIVERED and fake.results == []
        assert 45 <= sum(sleep.delays) <= DELIVERY_MIN_SECONDS
        assert records[-1]["event"] == "result.undelivered"

    def test_401_is_not_retried_and_says_why(
        self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        env = env_for(server, **{TOKEN_ENV: "tok-wrong-0000000000000000"})
        assert main([], env) == EXIT_UNDELIVERED
        assert server.requests == [("GET", "/v1/attempt")]
        assert server.results == []
        err = capsys.readouterr().err
        assert "tok-wrong-0000000000000000" not in err
        [*_, last] = log_lines(err)
        assert last["event"] == "attempt.unavailable"
        assert "401" in last["message"] and "invalid or expired token" in last["message"]
        assert "expired" in last["message"]

    def test_a_refused_result_exits_1(self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]) -> None:
        server.post_status = 400
        assert main([], env_for(server)) == EXIT_UNDELIVERED
        last = log_lines(capsys.readouterr().err)[-1]
        assert last["event"] == "result.undelivered"
        assert "400" in last["message"] and "result rejected" in last["message"]


class TestConfiguration:
    @pytest.mark.parametrize("missing", [CALLBACK_URL_ENV, TOKEN_ENV])
    def test_a_missing_variable_is_named_and_exits_2(
        self, missing: str, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        env = env_for(server)
        del env[missing]
        assert main([], env) == EXIT_CONFIG
        [record] = log_lines(capsys.readouterr().err)
        assert record["event"] == "config.invalid" and record["level"] == "error"
        assert missing in record["message"] and "set" in record["message"]

    def test_the_token_file_wins_and_is_read_again_for_every_request(
        self, server: FakeCallbackServer, tmp_path: Any
    ) -> None:
        token_file = tmp_path / "token"
        token_file.write_text("first-token\n")
        env = {k: v for k, v in env_for(server).items() if k != TOKEN_ENV}
        env["AGENTFLOW_TOKEN_FILE"] = str(token_file)
        config = read_config(env)
        assert config.token() == "first-token"
        token_file.write_text("rotated-token")  # the kubelet rotates a projected token in place
        assert config.token() == "rotated-token"

    def test_an_unreadable_token_file_is_named(self, server: FakeCallbackServer, tmp_path: Any) -> None:
        env = {**env_for(server), "AGENTFLOW_TOKEN_FILE": str(tmp_path / "missing")}
        with pytest.raises(ConfigError, match="AGENTFLOW_TOKEN_FILE"):
            read_config(env)
        assert server.requests == []

    @pytest.mark.parametrize(
        ("url", "says"),
        [("ftp://x", "http(s) URL"), ("http://u:p@host", "credentials"), ("http://host/?a=1", "no ?query")],
    )
    def test_a_malformed_url_exits_2(self, url: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([], {CALLBACK_URL_ENV: url, TOKEN_ENV: TOKEN}) == EXIT_CONFIG
        [record] = log_lines(capsys.readouterr().err)
        assert says in record["message"]

    def test_a_bad_model_mode_exits_2_before_fetching(
        self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main([], env_for(server, AGENTFLOW_MODEL_MODE="sometimes")) == EXIT_CONFIG
        assert "AGENTFLOW_MODEL_MODE" in log_lines(capsys.readouterr().err)[0]["message"]
        assert server.requests == []

    def test_a_missing_ca_file_exits_2(self, server: FakeCallbackServer, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([], env_for(server, AGENTFLOW_CALLBACK_CA_FILE="/nonexistent/ca.pem")) == EXIT_CONFIG
        assert "AGENTFLOW_CALLBACK_CA_FILE" in log_lines(capsys.readouterr().err)[0]["message"]

    def test_a_bad_flag_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["--token", TOKEN], {}) == EXIT_CONFIG
        assert TOKEN not in capsys.readouterr().out


class TestLogs:
    def test_the_token_is_redacted_wherever_it_appears(self) -> None:
        stream = io.StringIO()
        log = JsonLog(stream).redacting(TOKEN, 'a"quoted"secret')
        log.error("x", f"Bearer {TOKEN}", header=f"Bearer {TOKEN}", other='a"quoted"secret')
        text = stream.getvalue()
        assert TOKEN not in text and "quoted" not in text
        record = json.loads(text)
        assert record["message"] == f"Bearer {REDACTED}" and record["other"] == REDACTED


class StaticTransport:
    """A Transport that answers from a list, for the client's status handling."""

    def __init__(self, *answers: HttpResponse | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    async def request(self, method: str, url: str, *, headers: Any, body: bytes | None, timeout: float) -> HttpResponse:
        self.sent.append((method, url, dict(headers)))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class TestClient:
    async def test_5xx_and_transport_errors_are_retried_4xx_are_not(self) -> None:
        transport = StaticTransport(TransportError("reset"), HttpResponse(502, b""), HttpResponse(201, b"{}"))
        sleep = FastRetry()
        client = CallbackClient("http://cb/", TOKEN, transport, sleep=sleep)
        assert await client.post_result({"output": 1, "error": None, "calls": []}) == 201
        assert len(sleep.delays) == 2
        method, url, headers = transport.sent[0]
        assert (method, url) == ("POST", "http://cb/v1/attempt/result")
        assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["Content-Type"] == "application/json"

    async def test_404_names_the_likely_cause(self) -> None:
        client = CallbackClient("http://cb", TOKEN, StaticTransport(HttpResponse(404, b'{"error": "no attempt"}')))
        with pytest.raises(CallbackRefused, match=r"no attempt.*AGENTFLOW_CALLBACK_URL") as info:
            await client.fetch_attempt()
        assert info.value.status == 404

    def test_a_retry_policy_needs_a_try(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            RetryPolicy(tries=0)
