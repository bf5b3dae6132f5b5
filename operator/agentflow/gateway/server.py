"""The gateway over HTTP: an OpenAI-compatible endpoint (aiohttp) in front of :class:`Gateway`.

::

    POST /v1/chat/completions   Bearer TOKEN (a step attempt's token) -> an OpenAI chat.completion, or with
                                stream: true server-sent chat.completion.chunk events ending in [DONE]
    POST /v1/agentflow/memory/FUNCTION  Bearer TOKEN -> the JSON answer of memory_search, memory_save or past_runs
                                for the body's arguments, scoped to the attempt's namespace and Agent
                                (agentflow.gateway.memory); errors as {"error": {type, message, retryable}}
    POST /v1/embeddings         Bearer TOKEN -> an OpenAI embedding list for {model, input: str | [str]} with the
                                Agent's spec.memory.longTerm.embeddingModel (agentflow.gateway.embeddings: budgeted,
                                cached, charged to the attempt like a chat call)
    GET  /v1/models             Bearer TOKEN -> the models this attempt's Agent may use
    GET  /healthz               200 {"ok": true}

Prometheus metrics are not served here: ``agentflow gateway --metrics-listen`` serves ``gateway.metrics.registry``
on a port of its own, so a NetworkPolicy can let step pods reach this API and only monitoring reach metrics.

Request bodies are checked by :func:`agentflow.gateway.openai.parse_chat_request`: a 400 names every field it
cannot accept (``param`` is the first). Streaming (``stream: true``): the provider's own stream is relayed
chunk by chunk when the upstream can stream (LiteLLMUpstream does); the call is reserved like a plain
one and settled when the stream ends, fails mid-way (an ``error`` event instead of ``[DONE]``) or the client
goes away (what was streamed, estimated; agentflow.gateway.streaming). A cache hit, and the offline model,
are answered whole and sent as chunks.

Responses carry ``x-agentflow-cost-usd`` (what the call was charged; not on a live stream, whose cost is
known only at its end: the call log has it), ``x-agentflow-cache`` (hit, miss,
bypass), ``x-agentflow-model`` (the model that answered) and, when a soft budget passed its limit,
``x-agentflow-budget-warning``. Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code",
"retryable"}}`` with ``type`` the AgentFlow error type. Statuses: 400 bad request, 401 bad token, 402
BudgetExceeded (402 and not 429: OpenAI clients retry 429 on their own, and an exhausted budget does not
come back by retrying), 403 the attempt may not call models, 404 unknown route, 413 body too large, 502/503/504
provider failures, 500 anything else.

A request's W3C ``traceparent`` header is the parent of the gateway's spans for it (``chat MODEL``,
``budget.reserve``, ``memory FUNCTION``: agentflow.gateway.service, agentflow.telemetry).

The authenticator is injected (``authenticate(token) -> Attribution``, raising :class:`AuthError`): this
layer never verifies tokens itself; agentflow.services.gateway builds one from the operator's attempt
credentials, and the local runner's LoopbackGateway one of random per-attempt tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ..listener import Listener
from ..llm.chat import ModelError
from ..memory import InvalidMemory, MemoryStoreError
from ..security.identity import AttemptEnded, AuthError
from ..telemetry import attached, extract
from ..validation.memory import MEMORY_FUNCTIONS
from .embeddings import Embeddings
from .memory import GatewayMemory
from .openai import ChunkWriter, ParsedRequest, RequestError, completion_body, parse_chat_request
from .router import provider_of
from .service import Attribution, Gateway, GatewayError

__all__ = ["AuthError", "Authenticate", "GatewayServer", "start_gateway"]

log = logging.getLogger(__name__)

Authenticate = Callable[[str], Awaitable[Attribution]]
_MAX_BODY = web.AppKey("max_body_bytes", int)



def _error(status: int, type: str, message: str, *, param: str | None = None, retryable: bool = False,
           headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type, "param": param, "code": type, "retryable": retryable}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _failure(e: GatewayError) -> web.Response:
    headers = {"Retry-After": "5"} if e.status in (502, 503) and e.retryable else None
    return _error(e.status, e.type, e.message, param=e.param, retryable=e.retryable, headers=headers)


def _headers(cache: str, model: str, warnings: tuple[str, ...], cost_usd: float | None) -> dict[str, str]:
    """x-agentflow-* response headers (a live stream's cost is not known when they are sent: none then)."""
    headers = {"x-agentflow-cache": cache, "x-agentflow-model": model}
    if cost_usd is not None:
        headers["x-agentflow-cost-usd"] = f"{cost_usd:.10f}"
    if warnings:
        headers["x-agentflow-budget-warning"] = " | ".join(warnings)[:1000].replace("\n", " ")
    return headers


def _json(body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=200, body=orjson.dumps(body), content_type="application/json", headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 413:
            limit = request.app[_MAX_BODY]
            return _error(413, "RequestEntityTooLarge", f"the body of {request.method} {request.path} is larger "
                          f"than the gateway's limit of {limit} bytes ({limit / 2**20:g} MiB); send less text")
        kind = "NotFound" if e.status == 404 else "BadRequest"
        return _error(e.status, kind, f"{e.reason}: {request.method} {request.path}")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("gateway: %s %s failed", request.method, request.path)
        return _error(500, "InternalError", "internal error in the gateway; its log has the details",
                      retryable=True)


@web.middleware
async def _trace_context(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """The caller's ``traceparent`` (W3C) is the parent of the spans the handler records (agentflow.telemetry)."""
    with attached(extract(request.headers)):
        return await handler(request)


class GatewayServer:
    """The aiohttp application around one Gateway. ``start(host, port)`` (port 0: any free one, see ``port``)."""

    def __init__(self, gateway: Gateway, authenticate: Authenticate, *, max_body_bytes: int = 8 * 2**20,
                 clock: Callable[[], float] = time.time, embeddings: Embeddings | None = None,
                 memory: GatewayMemory | None = None) -> None:
        self.gateway = gateway
        self.embeddings = embeddings if embeddings is not None else Embeddings(gateway)
        self.memory = memory if memory is not None else GatewayMemory(self.embeddings, tracing=gateway.tracing)
        self._authenticate = authenticate
        self._clock = clock
        self.app = web.Application(middlewares=[_errors, _trace_context], client_max_size=max_body_bytes)
        self.app[_MAX_BODY] = max_body_bytes
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_post("/v1/agentflow/memory/{function}", self._memory)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/healthz", self._healthz)
        self._listener = Listener(self.app, "the gateway server", access_log=False)

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one: read ``.port``)."""
        await self._listener.start(host, port)

    @property
    def port(self) -> int:
        """The port it listens on (after start)."""
        return self._listener.port

    async def stop(self) -> None:
        """Stop listening and finish in-flight requests. Safe to call twice."""
        await self._listener.stop()

    # ----------------------------------------------------------------------------------------- handlers

    async def _who(self, request: web.Request) -> Attribution | web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="agentflow-gateway"'}
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "Unauthorized", "missing token: send the step attempt's token as "
                          "'Authorization: Bearer TOKEN' (the API key of an OpenAI client)", headers=challenge)
        try:
            return await self._authenticate(token.strip())
        except AttemptEnded as e:
            return _error(401, "AttemptEnded", str(e), headers=challenge)
        except AuthError as e:
            if e.retry_after is not None:
                return _error(503, "Unavailable", str(e), retryable=True,
                              headers={"Retry-After": str(max(1, round(e.retry_after)))})
            return _error(401, "Unauthorized", str(e), headers=challenge)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request)
        if isinstance(who, web.Response):
            return who
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as e:
            return _error(400, "BadRequest", f"the body is not JSON: {e}")
        try:
            parsed = parse_chat_request(body, request.headers)
        except RequestError as e:
            return _error(400, "BadRequest", e.message, param=e.param)
        if parsed.stream:
            return await self._stream(request, who, parsed)
        try:
            result = await self.gateway.complete(who, parsed.chat)
        except GatewayError as e:
            return _failure(e)
        answer = result.response
        headers = _headers(result.cache, answer.model, result.warnings, answer.cost_usd)
        return _json(completion_body(answer, Gateway.request_id(), int(self._clock())), headers)

    async def _stream(self, request: web.Request, who: Attribution, parsed: ParsedRequest) -> web.StreamResponse:
        """Server-sent chat.completion.chunk events as the provider sends the answer, then ``data: [DONE]``.

        The call is settled however the stream ends (agentflow.gateway.streaming): at its end before [DONE]
        is sent; when the provider fails mid-way (an ``error`` event is sent instead of [DONE]); when the
        client goes away (the next write fails, the provider's stream is closed, what was streamed is
        settled)."""
        try:
            stream = await self.gateway.stream(who, parsed.chat)
        except GatewayError as e:
            return _failure(e)
        cost = stream.result.response.cost_usd if stream.result is not None else None
        headers = {**_headers(stream.cache, stream.model, stream.warnings, cost),
                   "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        response = web.StreamResponse(status=200, headers=headers)
        try:
            await response.prepare(request)
            chunks = ChunkWriter(Gateway.request_id(), int(self._clock()), stream.model)
            await response.write(chunks.start())
            try:
                async for piece in stream.pieces():
                    await response.write(chunks.piece(piece))
            except ModelError as e:
                log.warning("gateway: the stream of %s failed mid-way: %s", who.subject, e.message)
                await response.write(chunks.error(e.type, e.message, e.retryable))
                await response.write_eof()
                return response
            assert stream.result is not None
            await response.write(chunks.end(stream.result.response, parsed.include_usage))
            await response.write_eof()
            return response
        except ConnectionResetError:  # the client went away; what was streamed is settled below
            log.info("gateway: the client of %s went away mid-stream", who.subject)
            return response
        finally:
            await asyncio.shield(stream.aclose())

    async def _embeddings(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        if isinstance(who, web.Response):
            return who
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as e:
            return _error(400, "BadRequest", f"the body is not JSON: {e}")
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "the body must be a JSON object with model and input")
        unknown = sorted(set(body) - {"model", "input", "encoding_format", "user"})
        if unknown:
            return _error(400, "BadRequest", f"unsupported fields: {', '.join(unknown)}", param=unknown[0])
        model, texts = body.get("model"), body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(model, str) or not model:
            return _error(400, "BadRequest", "model must be the embedding model's name", param="model")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "BadRequest", "input must be a string or a list of strings (token arrays are not "
                          "supported)", param="input")
        if body.get("encoding_format", "float") != "float":
            return _error(400, "BadRequest", "encoding_format must be float", param="encoding_format")
        try:
            result = await self.embeddings.embed(who, model, texts)
        except GatewayError as e:
            return _error(e.status, e.type, e.message, param=e.param, retryable=e.retryable)
        headers = {"x-agentflow-cost-usd": f"{result.cost_usd:.10f}", "x-agentflow-cache": result.cache,
                   "x-agentflow-model": result.model}
        return _json({"object": "list", "model": result.model,
                      "data": [{"object": "embedding", "index": i, "embedding": v}
                               for i, v in enumerate(result.vectors)],
                      "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens}}, headers)

    async def _memory(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        if isinstance(who, web.Response):
            return who
        name = request.match_info["function"]
        if name not in MEMORY_FUNCTIONS:
            return _error(404, "UnknownFunction", f"no memory function {name!r} (there are: "
                          f"{', '.join(MEMORY_FUNCTIONS)})")
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as e:
            return _error(400, "InvalidMemory", f"the body is not JSON: {e}")
        if not isinstance(body, dict):
            return _error(400, "InvalidMemory", f"{name}: the body must be a JSON object of the arguments")
        try:
            return _json(await self.memory.call(who, name, body))
        except MemoryStoreError as e:
            status = 400 if isinstance(e, InvalidMemory) else 503 if e.retryable else 409
            return _error(status, e.type, str(e), retryable=e.retryable)

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


async def start_gateway(gateway: Gateway, authenticate: Authenticate, host: str = "127.0.0.1",
                        port: int = 0) -> GatewayServer:
    """A started GatewayServer (port 0: a free one; read ``server.port``). Stop it with ``await server.stop()``."""
    server = GatewayServer(gateway, authenticate)
    await server.start(host, port)
    return server
