"""ToolRunner: schemas, kinds (builtin, http on loopback, container subprocess, wasm), rate limits, deadlines."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentflow.models import ToolSpec
from agentflow.tools import TokenBucket, ToolError, ToolRunner


def tool(**spec: Any) -> ToolSpec:
    return ToolSpec.model_validate({"name": "t", **spec})


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class TestSchemas:
    async def test_input_violation_names_path_and_is_not_retryable(self) -> None:
        echo = tool(
            builtin={"name": "echo"},
            inputSchema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        )
        runner = ToolRunner()
        assert (await runner.call(echo, {"n": 1}, idempotency_key="k", deadline=None)).output == {"n": 1}
        with pytest.raises(ToolError) as info:
            await runner.call(echo, {"n": "one"}, idempotency_key="k", deadline=None)
        assert (info.value.type, info.value.retryable) == ("InvalidToolInput", False)
        assert "$.n" in str(info.value) and "'type'" in str(info.value)

    async def test_output_violation(self) -> None:
        echo = tool(builtin={"name": "echo"}, outputSchema={"type": "object", "required": ["result"]})
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(echo, {"other": 1}, idempotency_key="k", deadline=None)
        assert info.value.type == "InvalidToolOutput" and "result" in str(info.value)

    async def test_invalid_schema_is_a_config_error(self) -> None:
        echo = tool(builtin={"name": "echo"}, inputSchema={"type": 12})
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(echo, {}, idempotency_key="k", deadline=None)
        assert info.value.type == "InvalidToolConfig" and "inputSchema" in str(info.value)


async def test_builtin_errors_become_tool_errors_and_cost_is_booked() -> None:
    search = tool(builtin={"name": "text-search", "config": {"documents": []}}, costPerCallUsd=0.01)
    outcome = await ToolRunner().call(search, {"query": "x"}, idempotency_key="k", deadline=None)
    assert outcome.output == [] and outcome.cost_usd == 0.01
    with pytest.raises(ToolError) as info:
        await ToolRunner().call(search, {}, idempotency_key="k", deadline=None)
    assert (info.value.type, info.value.retryable, info.value.tool) == ("InvalidToolInput", False, "t")


async def test_a_wasm_module_path_nothing_resolved_is_refused_and_says_so() -> None:
    # (the wasm kind itself is tested in test_wasm.py)
    wasm = tool(name="scorer", wasm={"module": "score.wasm"})
    with pytest.raises(ToolError) as info:
        await ToolRunner().call(wasm, {}, idempotency_key="k", deadline=None)
    assert (info.value.type, info.value.retryable) == ("InvalidToolConfig", False)
    assert "'scorer'" in str(info.value) and "wasm.module" in str(info.value)


class TestRateLimit:
    def test_bucket_refills_at_rate(self) -> None:
        bucket = TokenBucket(per_minute=2, now=0.0)
        assert bucket.reserve(0.0) == 0.0
        assert bucket.reserve(0.0) == 0.0
        assert bucket.reserve(0.0) == pytest.approx(30.0)
        assert bucket.reserve(0.0) == pytest.approx(60.0), "reservations queue up"
        assert bucket.reserve(120.0) == 0.0

    async def test_runner_waits_for_a_token_on_the_injected_clock(self) -> None:
        clock = FakeClock()
        runner = ToolRunner(clock=clock, sleep=clock.sleep)
        limited = tool(builtin={"name": "echo"}, rateLimit={"perMinute": 1})
        await runner.call(limited, {}, idempotency_key="k1", deadline=None)
        await runner.call(limited, {}, idempotency_key="k2", deadline=None)
        assert clock.slept == [pytest.approx(60.0)]

    async def test_no_token_before_the_deadline_is_a_retryable_error(self) -> None:
        clock = FakeClock()
        runner = ToolRunner(clock=clock, sleep=clock.sleep)
        limited = tool(builtin={"name": "echo"}, rateLimit={"perMinute": 1})
        await runner.call(limited, {}, idempotency_key="k1", deadline=None)
        with pytest.raises(ToolError) as info:
            await runner.call(limited, {}, idempotency_key="k2", deadline=clock.now + 5)
        assert (info.value.type, info.value.retryable) == ("ToolRateLimited", True)
        assert clock.slept == []
        clock.now += 60  # the refused call gave its token back
        await runner.call(limited, {}, idempotency_key="k3", deadline=clock.now + 5)
        assert clock.slept == []


async def test_deadline_already_passed() -> None:
    clock = FakeClock()
    with pytest.raises(ToolError) as info:
        await ToolRunner(clock=clock).call(tool(builtin={"name": "echo"}), {}, idempotency_key="k", deadline=999.0)
    assert (info.value.type, info.value.retryable) == ("DeadlineExceeded", True)


# --- http -------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes = b'{"ok": true}'
        self.redirects: dict[str, str] = {}


@pytest.fixture
def http_server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorder.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length),
                }
            )
            if self.path in recorder.redirects:
                self.send_response(302)
                self.send_header("Location", recorder.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(recorder.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(recorder.body)))
            self.end_headers()
            self.wfile.write(recorder.body)

        do_GET = do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()


class TestHttp:
    async def test_post_json_with_idempotency_key(self, http_server: tuple[str, Recorder]) -> None:
        base, rec = http_server
        outcome = await ToolRunner().call(
            tool(http={"url": f"{base}/act"}), {"refund": 12}, idempotency_key="run/act/1", deadline=None
        )
        assert outcome.output == {"ok": True}
        [req] = rec.requests
        assert (req["method"], req["path"]) == ("POST", "/act")
        assert json.loads(req["body"]) == {"refund": 12}
        assert req["headers"]["idempotency-key"] == "run/act/1"
        assert req["headers"]["content-type"] == "application/json"

    async def test_get_sends_inputs_as_query(self, http_server: tuple[str, Recorder]) -> None:
        base, rec = http_server
        await ToolRunner().call(
            tool(http={"url": f"{base}/q", "method": "GET"}), {"q": "a b", "n": 2}, idempotency_key="k", deadline=None
        )
        assert rec.requests[0]["path"] == "/q?q=a+b&n=2"

    @pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (404, False), (400, False)])
    async def test_http_errors(self, http_server: tuple[str, Recorder], status: int, retryable: bool) -> None:
        base, rec = http_server
        rec.status, rec.body = status, b'{"error": "nope"}'
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(tool(http={"url": base}), {}, idempotency_key="k", deadline=None)
        assert (info.value.type, info.value.retryable) == ("ToolHttpError", retryable)
        assert str(status) in str(info.value)

    async def test_redirect_to_a_host_not_allowed_is_refused(self, http_server: tuple[str, Recorder]) -> None:
        base, rec = http_server
        rec.redirects["/"] = "http://evil.invalid/steal"
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(tool(http={"url": f"{base}/"}), {}, idempotency_key="k", deadline=None)
        assert (info.value.type, info.value.retryable) == ("EgressDenied", False)
        assert "evil.invalid" in str(info.value) and "allowedHosts" in str(info.value)

    async def test_redirect_to_an_allowed_host_is_followed(self, http_server: tuple[str, Recorder]) -> None:
        base, rec = http_server
        port = base.rsplit(":", 1)[1]
        rec.redirects["/"] = f"http://localhost:{port}/final"
        spec = tool(http={"url": f"{base}/", "method": "GET", "allowedHosts": ["localhost"]})
        assert (await ToolRunner().call(spec, {}, idempotency_key="k", deadline=None)).output == {"ok": True}
        assert [r["path"] for r in rec.requests] == ["/", "/final"]

    async def test_unreachable_is_retryable(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(
                tool(http={"url": f"http://127.0.0.1:{port}/"}), {}, idempotency_key="k", deadline=None
            )
        assert (info.value.type, info.value.retryable) == ("ToolUnreachable", True)


# --- container ----------------------------------------------------------------------------------------


def container(script: str, **spec: Any) -> ToolSpec:
    return tool(container={"image": "ignored:locally", "command": [sys.executable, "-c", script]}, **spec)


class TestContainer:
    async def test_stdin_stdout_json_and_restricted_env(self) -> None:
        script = (
            "import json, os, sys; inputs = json.load(sys.stdin);"
            "print(json.dumps({'got': inputs, 'env': dict(os.environ)}))"
        )
        outcome = await ToolRunner().call(
            container(script, permissions={"env": {"MODE": "test"}}), {"x": 1}, idempotency_key="r/n/2", deadline=None
        )
        assert outcome.output["got"] == {"x": 1}
        env = outcome.output["env"]
        env.pop("LC_CTYPE", None)  # CPython may set this itself for the UTF-8 locale coercion
        assert env == {"MODE": "test", "AGENTFLOW_IDEMPOTENCY_KEY": "r/n/2"}

    async def test_timeout_kills_the_process(self) -> None:
        script = "import time; time.sleep(30)"
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(container(script, timeoutSeconds=0.5), {}, idempotency_key="k", deadline=None)
        assert (info.value.type, info.value.retryable) == ("ToolTimeout", True)

    @pytest.mark.parametrize(("code", "retryable"), [(1, False), (75, True)])
    async def test_exit_status(self, code: int, retryable: bool) -> None:
        script = f"import sys; sys.stderr.write('disk on fire'); sys.exit({code})"
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(container(script), {}, idempotency_key="k", deadline=None)
        assert (info.value.type, info.value.retryable) == ("ToolProcessFailed", retryable)
        assert "disk on fire" in str(info.value)

    async def test_stdout_must_be_json(self) -> None:
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(container("print('hello')"), {}, idempotency_key="k", deadline=None)
        assert info.value.type == "InvalidToolOutput"

    async def test_missing_command(self) -> None:
        spec = tool(container={"image": "x", "command": ["/nonexistent/tool-binary"]})
        with pytest.raises(ToolError) as info:
            await ToolRunner().call(spec, {}, idempotency_key="k", deadline=None)
        assert (info.value.type, info.value.retryable) == ("ToolCommandNotFound", False)
