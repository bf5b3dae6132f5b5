"""ToolRunner: calls one tool of a ToolPolicy, checking its schemas, grants and rate limit.

Kinds, as the local runner runs them:

``builtin``    in-process (agentflow.tools.builtin).
``http``       urllib in a worker thread; POST/PUT/PATCH send the inputs as a JSON body,
               GET/DELETE as query parameters; header ``Idempotency-Key``. Only the url's
               host and ``allowedHosts`` may be reached: a redirect elsewhere is refused
               before connecting. Environment proxies are not used.
``container``  the ``command`` runs as a local subprocess, inputs as JSON on stdin, output
               read as JSON from stdout; its environment is only ``permissions.env`` plus
               ``AGENTFLOW_IDEMPOTENCY_KEY``; it is killed at the timeout. The image is
               ignored; ``container_sandbox`` (agentflow.tools.sandbox) says whether the
               command runs isolated by bubblewrap (the local runner's default where it
               works) or with the user's privileges, files and network (a step pod, which
               is the sandbox itself). Exit status 75 (EX_TEMPFAIL) is retryable.
``wasm``       a WASI command in wasmtime, in a worker thread, nothing granted but
               ``permissions.env`` and read-only ``permissions.readPaths``; fuel, memory
               and timeout limits (agentflow.tools.wasm). Same convention as containers:
               inputs as JSON on stdin, one JSON value on stdout.
``mcp``        one tool of an MCP server (``member``: ``tool: NAME/TOOL``), the inputs as its arguments,
               through agentflow.tools.mcp (the official SDK; streamable HTTP or a stdio command, which the
               local runner does not sandbox either).

Every failure is a :class:`ToolError` (``type``, ``retryable``, ``tool``); deadlines are
absolute times on the runner's ``clock`` (the same clock as StepRequest.deadline).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.exceptions import best_match
from opentelemetry.trace import SpanKind

from agentflow.engine.schemas import schema_errors
from agentflow.models import ToolSpec
from agentflow.telemetry import Tracing, genai, inject

from .builtin import Builtins, BuiltinToolError
from .errors import ToolError
from .sandbox import ContainerSandbox

if TYPE_CHECKING:  # the SDK is imported on first use: it costs every command half a second
    from .mcp import McpClient
    from .wasm import WasmRunner  # wasmtime too: on first use (about 5 MB of an operator, which runs no tool)

IDEMPOTENCY_ENV = "AGENTFLOW_IDEMPOTENCY_KEY"
EX_TEMPFAIL = 75
MAX_OUTPUT_BYTES = 10 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ToolOutcome:
    output: Any
    cost_usd: float = 0.0
    latency_ms: float = 0.0


class TokenBucket:
    """``per_minute`` calls per minute, in bursts of up to ``per_minute``; time from the caller."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = now

    def reserve(self, now: float) -> float:
        """Take a token; returns how long to wait before using it (0 when one is available)."""
        self.tokens = min(self.capacity, self.tokens + max(now - self.updated, 0.0) * self.rate)
        self.updated = max(now, self.updated)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def release(self) -> None:
        """Give back a reserved token that will not be used."""
        self.tokens = min(self.capacity, self.tokens + 1.0)


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _check(schema: dict[str, Any] | None, value: Any, tool: str, what: str) -> None:
    if schema is None:
        return
    error_type = "InvalidToolInput" if what == "inputs" else "InvalidToolOutput"
    try:
        errors = schema_errors(schema, value)
    except jsonschema.SchemaError as exc:
        field = "inputSchema" if what == "inputs" else "outputSchema"
        raise ToolError(
            "InvalidToolConfig",
            f"tool {tool!r}: {field} is not a valid JSON Schema: {exc.message}",
            retryable=False,
            tool=tool,
        ) from exc
    if errors:
        error = best_match(errors)
        path = _json_path(error.absolute_path)
        raise ToolError(
            error_type,
            f"tool {tool!r}: {what} at {path} break rule {error.validator!r}: {error.message}",
            retryable=False,
            tool=tool,
        )


def _host_allowed(host: str, allowed: set[str]) -> bool:
    host = host.lower()
    return any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed)


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allowed: set[str], tool: str) -> None:
        self._allowed = allowed
        self._tool = tool

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        host = urllib.parse.urlsplit(newurl).hostname or ""
        if not _host_allowed(host, self._allowed):
            raise ToolError(
                "EgressDenied",
                f"tool {self._tool!r}: redirect to host {host!r} refused; add it to http.allowedHosts to allow it",
                retryable=False,
                tool=self._tool,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class ToolRunner:
    """Calls tools. Built once per driver; holds rate-limit buckets and builtin indexes."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wasm: WasmRunner | None = None,
        container_sandbox: ContainerSandbox | None = None,
        mcp: McpClient | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``wasm``: the wasm runner to use (default: one built on first use). ``container_sandbox``: how
        container tools run (default: plain subprocesses, as inside a step pod). ``mcp``: the MCP client.
        ``tracing``: where an http tool's request span goes (a CLIENT span named for its method, child of the
        current context, whose ids the request's ``traceparent`` carries); none without it."""
        self._tracing = tracing if tracing is not None else Tracing.off()
        self.container_sandbox = container_sandbox or ContainerSandbox(None, "no sandbox configured")
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._builtins = Builtins()
        self._wasm: WasmRunner | None = wasm
        self._mcp: McpClient | None = mcp

    @property
    def mcp(self) -> McpClient:
        """The MCP client (the SDK is imported on first use)."""
        if self._mcp is None:
            from .mcp import McpClient

            self._mcp = McpClient()
        return self._mcp

    @property
    def wasm(self) -> WasmRunner:
        """The wasm runner (its engine is built on first use)."""
        if self._wasm is None:
            from .wasm import WasmRunner

            self._wasm = WasmRunner()
        return self._wasm

    async def call(
        self, tool: ToolSpec, inputs: Mapping[str, Any], *, idempotency_key: str, deadline: float | None,
        member: str | None = None,
    ) -> ToolOutcome:
        """Run ``tool`` once with ``inputs`` (``member``: the MCP server's tool to call). Raises ToolError."""
        started = self._clock()
        _check(tool.input_schema, dict(inputs), tool.name, "inputs")
        await self._rate_limit(tool, deadline)
        timeout = self._timeout(tool, deadline)
        try:
            output = await asyncio.wait_for(self._dispatch(tool, inputs, idempotency_key, timeout, member), timeout)
        except TimeoutError as exc:
            raise ToolError(
                "ToolTimeout",
                f"tool {tool.name!r} did not answer within {timeout:.3g}s (timeoutSeconds/deadline)",
                retryable=True,
                tool=tool.name,
            ) from exc
        _check(tool.output_schema, output, tool.name, "output")
        return ToolOutcome(output, tool.cost_per_call_usd, (self._clock() - started) * 1000.0)

    def _timeout(self, tool: ToolSpec, deadline: float | None) -> float:
        timeout = tool.timeout_seconds
        if deadline is not None:
            left = deadline - self._clock()
            if left <= 0:
                raise ToolError(
                    "DeadlineExceeded",
                    f"tool {tool.name!r}: the step's deadline passed before the call",
                    retryable=True,
                    tool=tool.name,
                )
            timeout = min(timeout, left)
        return timeout

    async def _rate_limit(self, tool: ToolSpec, deadline: float | None) -> None:
        if tool.rate_limit is None:
            return
        now = self._clock()
        bucket = self._buckets.get(tool.name)
        if bucket is None or bucket.capacity != tool.rate_limit.per_minute:
            bucket = self._buckets[tool.name] = TokenBucket(tool.rate_limit.per_minute, now)
        wait = bucket.reserve(now)
        if wait <= 0:
            return
        if deadline is not None and now + wait > deadline:
            bucket.release()
            raise ToolError(
                "ToolRateLimited",
                f"tool {tool.name!r} is limited to {tool.rate_limit.per_minute}/minute; the next call is possible "
                f"in {wait:.3g}s, after the step's deadline",
                retryable=True,
                tool=tool.name,
            )
        await self._sleep(wait)

    async def _dispatch(self, tool: ToolSpec, inputs: Mapping[str, Any], key: str, timeout: float,
                        member: str | None) -> Any:
        if tool.mcp is not None:
            if member is None:
                raise ToolError("InvalidToolReference", f"tool {tool.name!r} is the MCP server {tool.mcp.server}: "
                                f"name one of its tools ({tool.name}/TOOL)", retryable=False, tool=tool.name)
            return await self.mcp.call(tool, member, inputs, idempotency_key=key, timeout=timeout)
        if tool.builtin is not None:
            try:
                return self._builtins.run(tool.builtin, inputs)
            except BuiltinToolError as exc:
                raise ToolError(exc.type, f"tool {tool.name!r}: {exc}", retryable=False, tool=tool.name) from exc
        if tool.http is not None:
            return await asyncio.to_thread(self._http, tool, inputs, key, timeout)
        if tool.container is not None:
            return await self._container(tool, inputs, key)
        if tool.wasm is not None:
            return await self._wasm_call(tool, inputs, timeout)
        raise ToolError(
            "ToolKindNotSupported",
            f"tool {tool.name!r} is a {tool.kind} tool; the local runner runs builtin, http and container tools "
            "only (run it on a cluster, or declare it as a container tool)",
            retryable=False,
            tool=tool.name,
        )

    def _http(self, tool: ToolSpec, inputs: Mapping[str, Any], key: str, timeout: float) -> Any:
        spec = tool.http
        assert spec is not None
        parts = urllib.parse.urlsplit(spec.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolError(
                "InvalidToolConfig",
                f"tool {tool.name!r}: http.url must be an http(s) URL, got {spec.url!r}",
                retryable=False,
                tool=tool.name,
            )
        allowed = {parts.hostname.lower(), *(h.lower() for h in spec.allowed_hosts)}
        url, body = spec.url, None
        if spec.method in ("GET", "DELETE"):
            query = urllib.parse.urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()})
            url = f"{url}{'&' if parts.query else '?'}{query}" if query else url
        else:
            body = json.dumps(dict(inputs)).encode("utf-8")
        # The attempt's trace context (asyncio.to_thread carries it here): the request's span is its child, and
        # the tool's own spans join the run's trace under it (traceparent).
        with self._tracing.span(spec.method, _http_attributes(tool.name, spec.method, parts),
                                kind=SpanKind.CLIENT) as span:
            headers = inject({"Content-Type": "application/json", "Accept": "application/json",
                              "Idempotency-Key": key})
            request = urllib.request.Request(url, data=body, headers=headers, method=spec.method)
            try:
                raw, status = self._send(tool, request, allowed, timeout)
            except ToolError as exc:  # the span gets the error's type (Tracing.span)
                if exc.http_status is not None:
                    span.set_attribute("http.response.status_code", exc.http_status)
                raise
            span.set_attribute("http.response.status_code", status)
        return _decode_output(raw, tool.name, allow_text=True)

    def _send(self, tool: ToolSpec, request: urllib.request.Request, allowed: set[str],
              timeout: float) -> tuple[bytes, int]:
        """Send ``request``: the body (at most MAX_OUTPUT_BYTES + 1 read) and the status; ToolError."""
        spec = tool.http
        assert spec is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _GuardedRedirects(allowed, tool.name))
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.read(MAX_OUTPUT_BYTES + 1), int(response.status)
        except urllib.error.HTTPError as exc:
            retryable = exc.code in (408, 425, 429) or exc.code >= 500
            detail = exc.read(300).decode("utf-8", "replace")
            raise ToolError(
                "ToolHttpError",
                f"tool {tool.name!r}: {spec.method} {spec.url} returned HTTP {exc.code}: {detail}",
                retryable=retryable,
                tool=tool.name,
                http_status=exc.code,
            ) from exc
        except urllib.error.URLError as exc:
            raise ToolError(
                "ToolUnreachable",
                f"tool {tool.name!r}: cannot reach {spec.url}: {exc.reason}",
                retryable=True,
                tool=tool.name,
            ) from exc
        except TimeoutError as exc:
            raise ToolError(
                "ToolTimeout",
                f"tool {tool.name!r}: {spec.url} did not answer within {timeout:.3g}s",
                retryable=True,
                tool=tool.name,
            ) from exc

    async def _container(self, tool: ToolSpec, inputs: Mapping[str, Any], key: str) -> Any:
        spec = tool.container
        assert spec is not None
        env = {**tool.permissions.env, IDEMPOTENCY_ENV: key}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.container_sandbox.argv(spec.command, tool),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise ToolError(
                "ToolCommandNotFound",
                f"tool {tool.name!r}: cannot start {spec.command[0]!r}: {exc.strerror or exc} (give an absolute "
                "path, or PATH in permissions.env)",
                retryable=False,
                tool=tool.name,
            ) from exc
        try:
            stdout, stderr = await proc.communicate(json.dumps(dict(inputs)).encode("utf-8"))
        except BaseException:  # timeout or cancellation: never leave the child running
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-500:]
            raise ToolError(
                "ToolProcessFailed",
                f"tool {tool.name!r}: {spec.command[0]} exited with {proc.returncode}: {tail}",
                retryable=proc.returncode == EX_TEMPFAIL,
                tool=tool.name,
            )
        return _decode_output(stdout, tool.name, allow_text=False)

    async def _wasm_call(self, tool: ToolSpec, inputs: Mapping[str, Any], timeout: float) -> Any:
        from .wasm import WasmError

        stdin = json.dumps(dict(inputs)).encode("utf-8")
        try:
            stdout = await asyncio.to_thread(self.wasm.run, tool, stdin, timeout)
        except WasmError as exc:
            raise ToolError(exc.type, f"tool {tool.name!r}: {exc.message}", retryable=exc.retryable,
                            tool=tool.name) from exc
        return _decode_output(stdout, tool.name, allow_text=False)


def _http_attributes(tool: str, method: str, parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """An http tool request's span attributes (OpenTelemetry HTTP client conventions): never the query string
    (inputs of GET/DELETE tools travel there) nor credentials in the URL."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return {"http.request.method": method, "server.address": host, "server.port": port,
            "url.full": f"{parts.scheme}://{shown}:{port}{parts.path or '/'}", genai.TOOL_NAME: tool}


def _decode_output(raw: bytes, tool: str, *, allow_text: bool) -> Any:
    if len(raw) > MAX_OUTPUT_BYTES:
        raise ToolError(
            "InvalidToolOutput", f"tool {tool!r}: output exceeds {MAX_OUTPUT_BYTES} bytes", retryable=False, tool=tool
        )
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        if allow_text:
            return text
        raise ToolError(
            "InvalidToolOutput",
            f"tool {tool!r}: stdout is not JSON ({text.strip()[:80]!r}): print one JSON value",
            retryable=False,
            tool=tool,
        ) from exc
