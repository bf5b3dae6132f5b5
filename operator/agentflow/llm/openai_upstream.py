"""A thin Upstream for OpenAI-compatible servers: one aiohttp POST per call, no litellm on the call path.

litellm is general (every provider, its own request and response objects, cost callbacks, logging) and costs
milliseconds of CPU per call. For the models most deployments run, ``openai/...`` (OpenAI itself, or any
OpenAI-compatible server named by an Agent's ``model.apiBase``: vLLM, Ollama, a company proxy), the wire
format is the one the gateway already speaks, so :class:`OpenAIUpstream` sends ``ChatRequest.openai_body()``
as it is and reads the answer. :class:`ByProvider` sends ``openai/`` models there and every other model to
litellm (``agentflow gateway --upstream openai-http``).

Keys and endpoints are decided exactly as LiteLLMUpstream does (:func:`agentflow.llm.chat.Endpoint`): the
Agent's key, else the process's key only where the endpoint policy allows it (``environment_key``), else
a placeholder, so a key never reaches an endpoint the platform did not list. Costs come from the Provider's
price lookup (litellm's bundled table, read once); token counts from the answer's ``usage`` (a server that
sends none is counted: the prompt with ``count_tokens``, the answer at about four characters a token).

Errors become :class:`~agentflow.llm.chat.ModelError` here: HTTP statuses through
:func:`~agentflow.llm.chat.status_error`, connection failures ``ModelConnectionError``, timeouts
``ModelTimeout``, an unreadable answer ``BadModelResponse`` (all retryable but 4xx).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from .chat import (
    ChatRequest,
    Endpoint,
    ModelError,
    ModelResponse,
    StreamDelta,
    Upstream,
    merge_tool_call,
    reported_tokens,
    status_error,
    tool_call_fragment,
    written_tokens,
)
from .pricing import PriceLookup, TokenCounter, approximate_token_counter, no_prices

__all__ = ["OPENAI_BASE", "PLACEHOLDER_KEY", "ByProvider", "OpenAIUpstream", "handles"]

OPENAI_BASE = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "sk-agentflow-no-key"
_PREFIX = "openai/"


def handles(model: str) -> bool:
    """Whether a model goes to the OpenAI-compatible client (litellm's ``openai/`` provider prefix)."""
    return model.startswith(_PREFIX) and len(model) > len(_PREFIX)


class OpenAIUpstream:
    """An :class:`~agentflow.llm.chat.Upstream` (and StreamingUpstream) speaking OpenAI's chat completions.

    ``api_base`` / ``api_key``: this process's default endpoint and key (AGENTFLOW_API_BASE /
    AGENTFLOW_API_KEY, or the platform's OPENAI_API_KEY), used as LiteLLMUpstream uses them. One aiohttp
    session, made on the first call in the running loop; :meth:`close` it at shutdown."""

    def __init__(self, *, api_base: str | None = None, api_key: str | None = None,
                 environment_key: str | None = None, prices: PriceLookup = no_prices,
                 count_tokens: TokenCounter = approximate_token_counter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``environment_key``: this process's OPENAI_API_KEY, sent exactly where litellm would read it from
        the environment (nowhere the endpoint policy does not allow it)."""
        self._api_base = api_base
        self._api_key = api_key
        self._environment_key = environment_key
        self._prices = prices
        self._count_tokens = count_tokens
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def target(self, endpoint: Endpoint) -> tuple[str, str | None]:
        """(base URL, key) of a call: the same decision as LiteLLMUpstream.kwargs (where that leaves the key
        unset, litellm reads OPENAI_API_KEY: ``environment_key`` here)."""
        key = endpoint.api_key
        if endpoint.api_base:
            base = endpoint.api_base
            if key is None:
                key = self._api_key if endpoint.environment_key else PLACEHOLDER_KEY
        elif self._api_base:
            base = self._api_base
            key = key or self._api_key or PLACEHOLDER_KEY
        else:
            base = OPENAI_BASE
            if key is None:
                key = self._api_key if endpoint.environment_key else PLACEHOLDER_KEY
        return base.rstrip("/"), key if key is not None else self._environment_key

    def _post(self, request: ChatRequest, endpoint: Endpoint, body: Mapping[str, Any],
              timeout: aiohttp.ClientTimeout) -> Any:
        base, key = self.target(endpoint)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if request.idempotency_key:
            headers["Idempotency-Key"] = request.idempotency_key
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session.post(f"{base}/chat/completions", data=orjson.dumps(body), headers=headers,
                                  timeout=timeout)

    @staticmethod
    def _body(request: ChatRequest) -> dict[str, Any]:
        body = request.openai_body()
        body["model"] = request.model[len(_PREFIX):] if handles(request.model) else request.model
        return body

    async def complete(self, request: ChatRequest, endpoint: Endpoint) -> ModelResponse:
        started = self._clock()
        timeout = aiohttp.ClientTimeout(total=request.timeout_seconds)
        try:
            async with self._post(request, endpoint, self._body(request), timeout) as response:
                raw = await response.read()
                if response.status != 200:
                    raise status_error(response.status, _detail(raw), request.model)
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, request.model) from exc
        except TimeoutError as exc:
            raise ModelError("ModelTimeout", f"model {request.model!r}: no answer within {request.timeout_seconds}"
                             " s (it is retried; raise the step's timeoutSeconds if it keeps happening)",
                             retryable=True, model=request.model) from exc
        try:
            data = orjson.loads(raw)
            choice = data["choices"][0]
            message = choice["message"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise _bad_answer(request.model, "the response has no message") from exc
        calls = tuple(_call(c) for c in message.get("tool_calls") or ())
        text = str(message.get("content") or "")
        input_tokens, output_tokens = self._tokens(request, data.get("usage"), text, calls)
        return ModelResponse(
            text=text, model=request.model, input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd=self._cost(request.model, input_tokens, output_tokens),
            latency_ms=(self._clock() - started) * 1000.0, tool_calls=calls,
            finish_reason=str(choice.get("finish_reason") or "stop"))

    async def stream(self, request: ChatRequest, endpoint: Endpoint) -> AsyncIterator[StreamDelta | ModelResponse]:
        """Server-sent chunks read as they arrive (``stream_options.include_usage`` asked for), then the answer."""
        started = self._clock()
        body = {**self._body(request), "stream": True, "stream_options": {"include_usage": True}}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=request.timeout_seconds,
                                        sock_read=request.timeout_seconds)
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage: Any = None
        try:
            async with self._post(request, endpoint, body, timeout) as response:
                if response.status != 200:
                    raise status_error(response.status, _detail(await response.read()), request.model)
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    try:
                        chunk = orjson.loads(data)
                    except orjson.JSONDecodeError as exc:
                        raise _bad_answer(request.model, "a stream chunk is not JSON") from exc
                    if not isinstance(chunk, dict):
                        raise _bad_answer(request.model, "a stream chunk is not an object")
                    if chunk.get("error"):
                        raise status_error(502, _detail(data), request.model)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        finish = choice.get("finish_reason") or finish
                        delta = choice.get("delta") or {}
                        content = str(delta.get("content") or "")
                        fragments = tuple(tool_call_fragment(f) for f in delta.get("tool_calls") or ())
                        for fragment in fragments:
                            merge_tool_call(calls, fragment)
                        if content or fragments:
                            text.append(content)
                            yield StreamDelta(content, fragments)
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, request.model) from exc
        except TimeoutError as exc:
            raise ModelError("ModelTimeout", f"model {request.model!r}: the stream stalled for "
                             f"{request.timeout_seconds} s", retryable=True, model=request.model) from exc
        if finish is None:
            raise ModelError("ModelConnectionError", f"model {request.model!r}: the stream ended before a "
                             "finish_reason (it is retried)", retryable=True, model=request.model)
        answer = "".join(text)
        tool_calls = tuple(calls[i] for i in sorted(calls))
        input_tokens, output_tokens = self._tokens(request, usage, answer, tool_calls)
        yield ModelResponse(
            text=answer, model=request.model, input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd=self._cost(request.model, input_tokens, output_tokens),
            latency_ms=(self._clock() - started) * 1000.0, tool_calls=tool_calls,
            finish_reason="tool_calls" if tool_calls else finish)

    def _tokens(self, request: ChatRequest, usage: Any, text: str,
                calls: tuple[Mapping[str, Any], ...]) -> tuple[int, int]:
        fields = usage if isinstance(usage, dict) else {}
        reported = reported_tokens(fields.get("prompt_tokens"), fields.get("completion_tokens"), request.model)
        return reported or (self._count_tokens(request.model, request.messages), written_tokens(text, calls))

    def _cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price = self._prices(model)
        return input_tokens * price[0] + output_tokens * price[1] if price is not None else 0.0


class ByProvider:
    """``openai/`` models to ``openai`` (OpenAIUpstream), every other model to ``other`` (litellm)."""

    def __init__(self, openai: OpenAIUpstream, other: Upstream) -> None:
        self.openai = openai
        self.other = other

    async def complete(self, request: ChatRequest, endpoint: Endpoint) -> ModelResponse:
        upstream = self.openai if handles(request.model) else self.other
        return await upstream.complete(request, endpoint)

    async def stream(self, request: ChatRequest, endpoint: Endpoint) -> AsyncIterator[StreamDelta | ModelResponse]:
        if handles(request.model):
            source = self.openai.stream(request, endpoint)
        else:
            streaming = getattr(self.other, "stream", None)
            if streaming is None:
                yield await self.other.complete(request, endpoint)
                return
            source = streaming(request, endpoint)
        try:
            async for item in source:
                yield item
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

    async def close(self) -> None:
        await self.openai.close()

    async def embed(self, model: str, texts: Sequence[str], endpoint: Endpoint,
                    timeout_seconds: float | None = None) -> tuple[list[list[float]], int]:
        """Embeddings stay with litellm (LiteLLMUpstream.embed)."""
        embed = getattr(self.other, "embed", None)
        if embed is None:
            raise ModelError("EmbeddingsUnsupported", f"model {model!r}: this upstream cannot embed",
                             retryable=False, model=model)
        vectors, tokens = await embed(model, texts, endpoint, timeout_seconds)
        return vectors, int(tokens)


def _detail(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
        message = data["error"]["message"]
        if isinstance(message, str):
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return raw.decode("utf-8", "replace")


def _connection_error(exc: BaseException, model: str) -> ModelError:
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    return ModelError("ModelConnectionError", f"model {model!r}: {detail} (check model.apiBase and the network; "
                      "it is retried)", retryable=True, model=model)


def _bad_answer(model: str, what: str) -> ModelError:
    return ModelError("BadModelResponse", f"model {model!r}: {what}", retryable=True, model=model)


def _call(value: Any) -> dict[str, Any]:
    call = value if isinstance(value, dict) else {}
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return {"id": str(call.get("id") or ""), "type": "function",
            "function": {"name": str(function.get("name") or ""), "arguments": str(function.get("arguments") or "")}}
