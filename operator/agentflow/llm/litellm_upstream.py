"""litellm, behind one module: the only place in AgentFlow that imports it.

litellm knows every provider (OpenAI, Anthropic, Gemini, Bedrock, Ollama, vLLM, ...), their tokenizers
and a price table. AgentFlow uses it for three things, all here:

    LiteLLMUpstream      the gateway's Upstream for real providers: one ``acompletion`` per call, litellm's
                         own retries off (retries belong to the engine and fallbacks to the gateway)
    LiteLLMUpstream.stream the same call streamed (``acompletion(stream=True)``, usage asked for with
                         ``stream_options.include_usage``): pieces as the provider sends them, then the answer
    LiteLLMUpstream.embed  embeddings (``aembedding``), for the gateway's /v1/embeddings
    count_message_tokens prompt tokens with the model's tokenizer (bundled: no network)
    cost_table           litellm's bundled price table (``model_cost``), read by agentflow.llm.pricing

litellm is imported on first use (it takes seconds) with ``LITELLM_LOCAL_MODEL_COST_MAP=True``, so prices
come from the installed package and importing it never touches the network. Its exceptions (and openai's)
become :class:`~agentflow.llm.chat.ModelError` in :func:`translate_error`.

Keys: a call carries the Endpoint's key; without one, litellm may read a provider key from this process's
environment only when the Endpoint says so (``environment_key``: the gateway's endpoint policy allows it),
else a placeholder is sent, so an environment key never reaches an endpoint the platform did not list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from .chat import (
    ChatRequest,
    Endpoint,
    ModelError,
    ModelResponse,
    StreamDelta,
    merge_tool_call,
    reported_tokens,
    tool_call_fragment,
    written_tokens,
)
from .pricing import approximate_token_counter, estimate_cost

__all__ = [
    "KEYLESS_PLACEHOLDER",
    "LiteLLMUpstream",
    "cost_table",
    "count_message_tokens",
    "load",
    "translate_error",
]

LOCAL_COST_MAP_ENV = "LITELLM_LOCAL_MODEL_COST_MAP"
KEYLESS_PLACEHOLDER = "sk-agentflow-no-key"
"""Sent to an explicit api_base that needs no key (vLLM, Ollama): the OpenAI client sends nothing without one."""


def load() -> ModuleType:
    """Import litellm with its bundled price map and its help banner off (it prints to stdout)."""
    os.environ.setdefault(LOCAL_COST_MAP_ENV, "True")
    import litellm

    settings: Any = litellm
    settings.suppress_debug_info = True
    return litellm


def cost_table() -> Mapping[str, Mapping[str, Any]]:
    """litellm's bundled price table: model name -> {input_cost_per_token, output_cost_per_token, ...}."""
    table: Mapping[str, Mapping[str, Any]] = load().model_cost
    return table


def count_message_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of chat ``messages`` for ``model`` with litellm's tokenizers (bundled: no network).

    Models litellm has no tokenizer for are counted with tiktoken's cl100k_base; when litellm cannot count
    at all (an odd message shape), the characters/4 estimate of agentflow.llm.pricing is used.
    """
    try:
        return int(load().token_counter(model=model, messages=[dict(m) for m in messages]))
    except Exception:  # an unknown tokenizer or message shape must not fail the caller
        return approximate_token_counter(model, messages)


# (exception class name in the MRO, error type, retryable, what to do). First match wins,
# so subclasses (ContextWindowExceededError < BadRequestError, Timeout < APIConnectionError) come first.
_RULES: tuple[tuple[str, str, bool, str], ...] = (
    ("ContextWindowExceededError", "ContextWindowExceeded", False,
     "shorten the step inputs or use a model with a larger context window"),
    ("ContentPolicyViolationError", "ContentPolicyViolation", False, "change the prompt or its inputs"),
    ("RateLimitError", "RateLimited", True, "it is retried with backoff; raise the quota or add fallbacks"),
    ("Timeout", "ModelTimeout", True, "it is retried; raise the step's timeoutSeconds if it keeps happening"),
    ("APITimeoutError", "ModelTimeout", True, "it is retried; raise the step's timeoutSeconds if it keeps happening"),
    ("AuthenticationError", "AuthenticationFailed", False,
     "check the provider API key (e.g. OPENAI_API_KEY) or the Agent's model.credentialsSecretRef"),
    ("PermissionDeniedError", "PermissionDenied", False, "check that the API key may use this model"),
    ("NotFoundError", "ModelNotFound", False, "check the Agent's model.name and model.apiBase"),
    ("BadRequestError", "BadModelRequest", False, "check the model name, parameters and prompt"),
    ("UnprocessableEntityError", "BadModelRequest", False, "check the model name, parameters and prompt"),
    ("ServiceUnavailableError", "ProviderUnavailable", True, "it is retried; add fallbacks to ride out outages"),
    ("BadGatewayError", "ProviderUnavailable", True, "it is retried; add fallbacks to ride out outages"),
    ("InternalServerError", "ProviderError", True, "it is retried; add fallbacks to ride out outages"),
    ("APIConnectionError", "ModelConnectionError", True, "check model.apiBase and the network; it is retried"),
)


def translate_error(exc: BaseException, model: str) -> ModelError:
    """The one place where litellm/openai exceptions become ModelError."""
    if isinstance(exc, ModelError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc).split("Traceback (most recent call last)")[0]  # litellm quotes its own traceback in some
    detail = " ".join(text.split())[:500] or type(exc).__name__
    lowered = detail.lower()
    if "invalid response object" in lowered or "unable to convert" in lowered:  # an answer litellm cannot read
        return ModelError("BadModelResponse", f"model {model!r}: the provider's answer is not an OpenAI chat "
                          f"completion (no message, a tool call without its function, usage that is not numbers): "
                          f"{detail[:300]}", retryable=False, model=model)
    # litellm reports some client-side failures as InternalServerError (500): refused or
    # unreachable endpoints, and a missing API key. Neither is the provider's fault.
    if "missing credentials" in lowered or "api_key client option must be set" in lowered:
        names = {"AuthenticationError"}
    elif "APIStatusError" in names and "connection error" in lowered:
        names = {"APIConnectionError"}
    for class_name, error_type, retryable, hint in _RULES:
        if class_name in names:
            return ModelError(error_type, f"model {model!r}: {detail} ({hint})", retryable=retryable, model=model)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        retryable = status in (408, 409, 429) or status >= 500
        error_type = "ProviderError" if retryable else "BadModelRequest"
        return ModelError(error_type, f"model {model!r}: HTTP {status}: {detail}", retryable=retryable, model=model)
    if isinstance(exc, TimeoutError):
        return ModelError("ModelTimeout", f"model {model!r}: timed out", retryable=True, model=model)
    if isinstance(exc, OSError):
        return ModelError("ModelConnectionError", f"model {model!r}: {detail}", retryable=True, model=model)
    return ModelError(
        "ModelCallFailed", f"model {model!r}: {type(exc).__name__}: {detail}", retryable=False, model=model
    )


def _plain(value: Any) -> Any:
    """litellm's pydantic objects (tool calls) as plain JSON values."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _usage(usage: Any, request: ChatRequest, answer: str, tool_calls: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(input, output) tokens: the provider's usage (checked), else counted (chat.tokens_of)."""
    reported = reported_tokens(getattr(usage, "prompt_tokens", None) if usage is not None else None,
                               getattr(usage, "completion_tokens", None) if usage is not None else None,
                               request.model)
    return reported or (count_message_tokens(request.model, request.messages), written_tokens(answer, tool_calls))


def _tool_calls(message: Any) -> tuple[dict[str, Any], ...]:
    calls = getattr(message, "tool_calls", None) or []
    out = []
    for call in calls:
        data = _plain(call)
        function = data.get("function") or {}
        out.append({
            "id": str(data.get("id") or ""),
            "type": "function",
            "function": {"name": str(function.get("name") or ""), "arguments": function.get("arguments") or ""},
        })
    return tuple(out)


class LiteLLMUpstream:
    """An :class:`~agentflow.llm.chat.Upstream` over litellm: any provider it knows.

    ``api_base``/``api_key`` are the defaults of calls whose Endpoint names none (the local runner's
    AGENTFLOW_API_BASE / AGENTFLOW_API_KEY); without them litellm reads the provider's usual variables.
    """

    def __init__(self, *, api_base: str | None = None, api_key: str | None = None,
                 clock: Callable[[], float] = time.monotonic, litellm_module: ModuleType | None = None) -> None:
        self._api_base = api_base
        self._api_key = api_key
        self._clock = clock
        self._litellm = litellm_module

    def _module(self) -> ModuleType:
        if self._litellm is None:
            self._litellm = load()
        return self._litellm

    def kwargs(self, request: ChatRequest, endpoint: Endpoint) -> dict[str, Any]:
        """The keyword arguments of ``litellm.acompletion`` for this call."""
        kwargs: dict[str, Any] = request.openai_body()
        kwargs.update(num_retries=0, max_retries=0)
        key = endpoint.api_key
        if endpoint.api_base:  # resolved by the gateway: only the key it allows goes there
            kwargs["api_base"] = endpoint.api_base
            if key is None:  # the platform's key only where allowed; never let litellm pick one from the env
                key = self._api_key if endpoint.environment_key else KEYLESS_PLACEHOLDER
        elif self._api_base:  # this process's default endpoint (AGENTFLOW_API_BASE) and key
            kwargs["api_base"] = self._api_base
            key = key or self._api_key or KEYLESS_PLACEHOLDER
        elif key is None and endpoint.environment_key:
            key = self._api_key
        elif key is None:
            key = KEYLESS_PLACEHOLDER
        if key is not None:
            kwargs["api_key"] = key
        if request.timeout_seconds is not None:
            kwargs["timeout"] = request.timeout_seconds
        if request.idempotency_key:
            kwargs["extra_headers"] = {"Idempotency-Key": request.idempotency_key}
        return kwargs

    async def complete(self, request: ChatRequest, endpoint: Endpoint) -> ModelResponse:
        litellm = self._module()
        started = self._clock()
        try:
            response = await litellm.acompletion(**self.kwargs(request, endpoint))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, request.model) from exc
        latency_ms = (self._clock() - started) * 1000.0
        try:
            choice = response.choices[0]
            message = choice.message
            text = message.content or ""
        except (AttributeError, IndexError) as exc:
            raise ModelError("BadModelResponse", f"model {request.model!r}: the response has no message",
                             retryable=True, model=request.model) from exc
        tool_calls = _tool_calls(message)
        input_tokens, output_tokens = _usage(getattr(response, "usage", None), request, str(text), tool_calls)
        hidden = getattr(response, "_hidden_params", None) or {}
        return ModelResponse(
            text=str(text),
            model=request.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self._cost(litellm, response, request.model, input_tokens, output_tokens),
            latency_ms=latency_ms,
            cached=bool(hidden.get("cache_hit")),
            tool_calls=tool_calls,
            finish_reason=str(getattr(choice, "finish_reason", None) or "stop"),
        )

    async def stream(self, request: ChatRequest, endpoint: Endpoint) -> AsyncIterator[StreamDelta | ModelResponse]:
        """The call streamed: a StreamDelta per provider chunk, then the whole answer (a ModelResponse).

        Tokens are the provider's usage (asked for with ``stream_options.include_usage``); a provider that sends
        none is counted here (the prompt with its tokenizer, the answer at about four characters a token).
        Closing this iterator closes the provider's stream."""
        litellm = self._module()
        started = self._clock()
        kwargs = self.kwargs(request, endpoint)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await litellm.acompletion(**kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, request.model) from exc
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish, usage = "stop", None
        try:
            async for chunk in response:
                usage = getattr(chunk, "usage", None) or usage
                choices = getattr(chunk, "choices", None) or []
                if not choices:
                    continue
                choice = choices[0]
                finish = str(getattr(choice, "finish_reason", None) or finish)
                delta = getattr(choice, "delta", None)
                content = str(getattr(delta, "content", None) or "")
                fragments = tuple(tool_call_fragment(_plain(f)) for f in (getattr(delta, "tool_calls", None) or []))
                for fragment in fragments:
                    merge_tool_call(calls, fragment)
                if content or fragments:
                    text.append(content)
                    yield StreamDelta(content, fragments)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, request.model) from exc
        finally:
            with contextlib.suppress(Exception):
                await response.aclose()
        answer = "".join(text)
        tool_calls = tuple(calls[i] for i in sorted(calls))
        input_tokens, output_tokens = _usage(usage, request, answer, tool_calls)
        cost = estimate_cost(request.model, input_tokens, output_tokens, litellm.model_cost)
        yield ModelResponse(
            text=answer, model=request.model, input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd=cost if cost is not None else 0.0, latency_ms=(self._clock() - started) * 1000.0,
            tool_calls=tool_calls, finish_reason="tool_calls" if tool_calls else finish,
        )

    @staticmethod
    def _cost(litellm: ModuleType, response: Any, model: str, input_tokens: int, output_tokens: int) -> float:
        try:
            cost = litellm.completion_cost(completion_response=response, model=model)
        except Exception:  # litellm raises for models missing from its price table
            cost = None
        if isinstance(cost, int | float) and cost > 0:
            return float(cost)
        estimate = estimate_cost(model, input_tokens, output_tokens, litellm.model_cost)
        return estimate if estimate is not None else 0.0

    async def embed(self, model: str, texts: Sequence[str], endpoint: Endpoint,
                    timeout_seconds: float | None = None) -> tuple[list[list[float]], int]:
        """One ``aembedding`` call: (a vector per text, the input tokens the provider counted)."""
        litellm = self._module()
        request = ChatRequest(model=model, messages=(), timeout_seconds=timeout_seconds)
        kwargs = {k: v for k, v in self.kwargs(request, endpoint).items()
                  if k in ("api_base", "api_key", "timeout", "extra_headers")}
        try:
            response = await litellm.aembedding(model=model, input=list(texts), num_retries=0, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, model) from exc
        try:
            data = sorted(response.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
            vectors = [[float(v) for v in (d["embedding"] if isinstance(d, dict) else d.embedding)] for d in data]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError("BadModelResponse", f"model {model!r}: the embedding response has no vectors",
                             retryable=True, model=model) from exc
        if len(vectors) != len(texts):
            raise ModelError("BadModelResponse", f"model {model!r}: {len(vectors)} vectors for {len(texts)} texts",
                             retryable=True, model=model)
        usage = getattr(response, "usage", None)
        return vectors, int(getattr(usage, "prompt_tokens", 0) or 0)
