"""The gateway over HTTP: an OpenAI-compatible endpoint (aiohttp) in front of :class:`Gateway`.

::

    POST /v1/chat/completions   Bearer TOKEN (a step attempt's token) -> an OpenAI chat.completion
    GET  /v1/models             Bearer TOKEN -> the models this attempt's Agent may use
    GET  /healthz               200 {"ok": true}
    GET  /metrics               Prometheus text

Requests are checked strictly, and a 400 names the field (``param``): ``model``, ``messages`` (non-empty list
of ``{role, content}`` strings), ``temperature`` (0..2), ``max_tokens`` / ``max_completion_tokens`` (>= 1),
``n`` (only 1), ``stream`` (only false: streaming is not supported), ``response_format`` (``text``,
``json_object``, or ``json_schema`` whose ``schema`` becomes the call's output schema), ``user`` (ignored).
Any other field is refused rather than silently dropped. Headers: ``Idempotency-Key`` (passed upstream),
``Cache-Control: no-cache`` (do not answer from the cache) / ``no-store`` (neither read nor write it),
``X-AgentFlow-Timeout-Seconds`` (upstream timeout of this call).

Responses carry ``x-agentflow-cost-usd`` (what the call was charged), ``x-agentflow-cache`` (hit, miss,
bypass), ``x-agentflow-model`` (the model that answered) and, when a soft budget passed its limit,
``x-agentflow-budget-warning``. Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code",
"retryable"}}`` with ``type`` the AgentFlow error type. Statuses: 400 bad request, 401 bad token, 402
BudgetExceeded (402 and not 429: OpenAI clients retry 429 on their own, and an exhausted budget does not
come back by retrying), 403 the attempt may not call models, 404 unknown route, 413 body too large, 502/503/504
provider failures, 500 anything else.

The authenticator is injected (``authenticate(token) -> Attribution``, raising :class:`AuthError`): this
layer is below agentflow.callback, so it never verifies tokens itself; agentflow.services.gateway builds one
from the callback key and the stored attempts, and the local runner needs none (it calls Gateway in-process).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .router import provider_of
from .service import Attribution, ChatRequest, Gateway, GatewayError

__all__ = ["AuthError", "Authenticate", "GatewayServer", "RequestError", "parse_chat_request", "start_gateway"]

log = logging.getLogger(__name__)

Authenticate = Callable[[str], Awaitable[Attribution]]

MAX_TIMEOUT_SECONDS = 3600.0
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})
_FIELDS = frozenset(
    {"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "n", "stream", "response_format",
     "user"}
)


class AuthError(Exception):
    """The bearer token is missing, malformed, expired or names no stored attempt (HTTP 401)."""


class RequestError(ValueError):
    """A request field is wrong; ``param`` names it (OpenAI's ``error.param``)."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _output_schema(value: Any) -> Mapping[str, Any] | None:
    if not isinstance(value, dict):
        raise RequestError("response_format", "must be an object with a type (text, json_object or json_schema)")
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return None
    if kind != "json_schema":
        raise RequestError("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise RequestError("response_format.json_schema.schema", "must be an object (the JSON Schema)")
    schema: Mapping[str, Any] = spec["schema"]
    return schema


def parse_chat_request(body: Any, headers: Mapping[str, str]) -> ChatRequest:
    """The ChatRequest a body and its headers describe; RequestError naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(None, f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(body.keys() - _FIELDS)
    if unknown:
        raise RequestError(unknown[0], f"{unknown[0]!r} is not supported by the AgentFlow gateway; "
                                       f"supported fields: {', '.join(sorted(_FIELDS))}")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model", "must be a non-empty string naming one of the Agent's models")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "must be a non-empty list of {role, content} objects")
    checked: list[Mapping[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}]", "must be an object {role, content}")
        extra = sorted(message.keys() - {"role", "content", "name"})
        if extra:
            raise RequestError(f"messages[{i}].{extra[0]}", "is not supported (messages hold role, content, name)")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise RequestError(f"messages[{i}].role", f"must be one of {', '.join(sorted(_ROLES))}, got {role!r}")
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content", "must be a string (content parts are not supported)")
        checked.append({"role": role, "content": content})
    temperature = body.get("temperature")
    if temperature is not None and (not _number(temperature) or not 0 <= temperature <= 2):
        raise RequestError("temperature", f"must be a number from 0 to 2, got {temperature!r}")
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise RequestError(name, f"must be an integer >= 1, got {value!r}")
        if max_tokens is not None and value != max_tokens:
            raise RequestError(name, "max_tokens and max_completion_tokens disagree; send one")
        max_tokens = value
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise RequestError("n", f"only n = 1 is supported, got {n!r}")
    stream = body.get("stream")
    if stream is not None and stream is not False:
        raise RequestError("stream", "streaming is not supported by the AgentFlow gateway; send stream: false")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError("user", "must be a string")
    schema = _output_schema(body["response_format"]) if body.get("response_format") is not None else None
    directives = {d.strip().lower() for d in headers.get("Cache-Control", "").split(",")}
    no_store = "no-store" in directives
    timeout = None
    raw_timeout = headers.get("X-AgentFlow-Timeout-Seconds")
    if raw_timeout is not None:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = math.nan
        if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            raise RequestError("X-AgentFlow-Timeout-Seconds",
                               f"must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS:.0f}], got {raw_timeout!r}")
    key = headers.get("Idempotency-Key")
    return ChatRequest(
        model=model.strip(),
        messages=tuple(checked),
        temperature=float(temperature) if temperature is not None else None,
        max_tokens=max_tokens,
        output_schema=schema,
        timeout_seconds=timeout,
        idempotency_key=key.strip()[:512] if key and key.strip() else None,
        read_cache="no-cache" not in directives and not no_store,
        write_cache=not no_store,
    )


def _error(status: int, type: str, message: str, *, param: str | None = None, retryable: bool = False,
           headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type, "param": param, "code": type, "retryable": retryable}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _json(body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=200, body=orjson.dumps(body), content_type="application/json", headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        kind = "NotFound" if e.status == 404 else "RequestEntityTooLarge" if e.status == 413 else "BadRequest"
        return _error(e.status, kind, f"{e.reason}: {request.method} {request.path}")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("gateway: %s %s failed", request.method, request.path)
        return _error(500, "InternalError", "internal error in the gateway; its log has the details",
                      retryable=True)


class GatewayServer:
    """The aiohttp application around one Gateway. ``start(host, port)`` (port 0: any free one, see ``port``)."""

    def __init__(self, gateway: Gateway, authenticate: Authenticate, *, max_body_bytes: int = 8 * 2**20,
                 clock: Callable[[], float] = time.time) -> None:
        self.gateway = gateway
        self._authenticate = authenticate
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[_errors], client_max_size=max_body_bytes)
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)

    async def start(self, host: str, port: int) -> None:
        if self._runner is not None:
            raise RuntimeError("the gateway server is already started")
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(e.errno, f"the gateway cannot listen on {host}:{port}: {e.strerror}") from e
        self._runner = runner

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the gateway server is not started: call start() first")
        port: int = self._runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ----------------------------------------------------------------------------------------- handlers

    async def _who(self, request: web.Request) -> Attribution | web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="agentflow-gateway"'}
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "Unauthorized", "missing token: send the step attempt's token as "
                          "'Authorization: Bearer TOKEN' (the API key of an OpenAI client)", headers=challenge)
        try:
            return await self._authenticate(token.strip())
        except AuthError as e:
            return _error(401, "Unauthorized", str(e), headers=challenge)

    async def _chat(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        if isinstance(who, web.Response):
            return who
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as e:
            return _error(400, "BadRequest", f"the body is not JSON: {e}")
        try:
            chat = parse_chat_request(body, request.headers)
        except RequestError as e:
            return _error(400, "BadRequest", f"{e.param}: {e.message}" if e.param else e.message, param=e.param)
        try:
            result = await self.gateway.complete(who, chat)
        except GatewayError as e:
            headers = {"Retry-After": "5"} if e.status in (502, 503) and e.retryable else None
            return _error(e.status, e.type, e.message, param=e.param, retryable=e.retryable, headers=headers)
        answer = result.response
        headers = {
            "x-agentflow-cost-usd": f"{answer.cost_usd:.10f}",
            "x-agentflow-cache": result.cache,
            "x-agentflow-model": answer.model,
        }
        if result.warnings:
            headers["x-agentflow-budget-warning"] = " | ".join(result.warnings)[:1000].replace("\n", " ")
        return _json({
            "id": Gateway.request_id(),
            "object": "chat.completion",
            "created": int(self._clock()),
            "model": answer.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
                      "total_tokens": answer.input_tokens + answer.output_tokens},
        }, headers)

    async def _models(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        if isinstance(who, web.Response):
            return who
        try:
            models = self.gateway.candidates(who)
        except GatewayError as e:
            return _error(e.status, e.type, e.message)
        created = int(self._clock())
        return _json({"object": "list", "data": [
            {"id": m, "object": "model", "created": created, "owned_by": provider_of(m)} for m in models]})

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        data = generate_latest(self.gateway.metrics.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_gateway(gateway: Gateway, authenticate: Authenticate, host: str = "127.0.0.1",
                        port: int = 0) -> GatewayServer:
    """A started GatewayServer (port 0: a free one; read ``server.port``). Stop it with ``await server.stop()``."""
    server = GatewayServer(gateway, authenticate)
    await server.start(host, port)
    return server
