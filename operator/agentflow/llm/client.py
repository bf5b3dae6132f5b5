"""Model calls: one small protocol, the litellm client behind it, and fallbacks.

The seam between AgentFlow and model providers is :class:`ModelClient`
(``complete(ModelRequest) -> ModelResponse``), like httpx's transport. Two
implementations: :class:`LiteLLMClient` (every provider litellm knows) and
:class:`agentflow.llm.offline.OfflineModel` (no network, deterministic).
:class:`FallbackClient` wraps either to try an Agent's fallback models.

Errors of this package::

    LLMError                      base; never raised itself
    ├── ModelError                a model call failed; .type, .retryable, .model
    ├── PromptRenderError         a prompt could not be rendered (agentflow.llm.prompts)
    └── OutputValidationError     the answer is not JSON matching the outputSchema (.path, .rule)

litellm's and openai's exceptions are translated into :class:`ModelError` in
one place, :func:`translate_error`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol

from .pricing import estimate_cost, load_litellm

IDEMPOTENCY_KEY = "idempotency_key"
"""Key of ModelRequest.metadata holding the attempt's idempotency key (RUN/NODE/ATTEMPT)."""


class LLMError(Exception):
    """Base of the errors of agentflow.llm."""


class ModelError(LLMError):
    """A model call failed. ``retryable`` False means retrying the same call cannot help."""

    def __init__(self, type: str, message: str, *, retryable: bool, model: str = "") -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = retryable
        self.model = model

    def __repr__(self) -> str:
        return f"ModelError(type={self.type!r}, retryable={self.retryable}, model={self.model!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRequest:
    """One chat completion to make.

    ``output_schema`` is the JSON Schema the answer must satisfy (the prompt
    already tells the model so; the offline model uses it to shape its answer).
    ``metadata`` carries at least ``idempotency_key``; it is never sent as prompt text.
    """

    model: str
    messages: tuple[Mapping[str, str], ...]
    temperature: float | None = None
    max_tokens: int | None = None
    api_base: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    output_schema: Mapping[str, Any] | None = None
    timeout_seconds: float | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("ModelRequest.model must name a model in litellm's naming, e.g. openai/gpt-4o-mini")
        if not self.messages:
            raise ValueError("ModelRequest.messages must hold at least one message")
        for i, message in enumerate(self.messages):
            if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                raise ValueError(f"ModelRequest.messages[{i}] needs string 'role' and 'content' fields")

    @property
    def idempotency_key(self) -> str | None:
        return self.metadata.get(IDEMPOTENCY_KEY)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelResponse:
    """The answer of one model call. ``model`` is the model that actually answered."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    failed_models: tuple[str, ...] = ()
    """Models tried first that failed with a retryable error (set by FallbackClient)."""


class ModelClient(Protocol):
    """Makes one model call. Raises ModelError when the call fails."""

    async def complete(self, request: ModelRequest) -> ModelResponse: ...


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the encoding hashed everywhere in AgentFlow."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def request_hash(request: ModelRequest) -> str:
    """SHA-256 of what determines the answer: model, messages, sampling params and output schema.

    Credentials, endpoint, timeout and metadata are left out, so the same call
    hashes the same from a laptop and from a cluster.
    """
    body = {
        "model": request.model,
        "messages": [dict(m) for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "output_schema": request.output_schema,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


# (exception class name in the MRO, error type, retryable, what to do). First match wins,
# so subclasses (ContextWindowExceededError < BadRequestError, Timeout < APIConnectionError) come first.
_RULES: tuple[tuple[str, str, bool, str], ...] = (
    (
        "ContextWindowExceededError",
        "ContextWindowExceeded",
        False,
        "shorten the step inputs or use a model with a larger context window",
    ),
    ("ContentPolicyViolationError", "ContentPolicyViolation", False, "change the prompt or its inputs"),
    ("RateLimitError", "RateLimited", True, "it is retried with backoff; raise the quota or add fallbacks"),
    ("Timeout", "ModelTimeout", True, "it is retried; raise the step's timeoutSeconds if it keeps happening"),
    (
        "APITimeoutError",
        "ModelTimeout",
        True,
        "it is retried; raise the step's timeoutSeconds if it keeps happening",
    ),
    (
        "AuthenticationError",
        "AuthenticationFailed",
        False,
        "check the provider API key (e.g. OPENAI_API_KEY) or the Agent's model.credentialsSecretRef",
    ),
    ("PermissionDeniedError", "PermissionDenied", False, "check that the API key may use this model"),
    ("NotFoundError", "ModelNotFound", False, "check the Agent's model.name and model.apiBase"),
    ("BadRequestError", "BadModelRequest", False, "check the model name, parameters and prompt"),
    ("UnprocessableEntityError", "BadModelRequest", False, "check the model name, parameters and prompt"),
    (
        "ServiceUnavailableError",
        "ProviderUnavailable",
        True,
        "it is retried; add fallbacks to ride out outages",
    ),
    ("BadGatewayError", "ProviderUnavailable", True, "it is retried; add fallbacks to ride out outages"),
    ("InternalServerError", "ProviderError", True, "it is retried; add fallbacks to ride out outages"),
    (
        "APIConnectionError",
        "ModelConnectionError",
        True,
        "check model.apiBase and the network; it is retried",
    ),
)


def translate_error(exc: BaseException, model: str) -> ModelError:
    """The one place where litellm/openai exceptions become ModelError."""
    if isinstance(exc, ModelError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    detail = " ".join(str(exc).split())[:500] or type(exc).__name__
    lowered = detail.lower()
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


class LiteLLMClient:
    """Calls any provider litellm supports (OpenAI, Anthropic, Gemini, Ollama, vLLM, ...).

    litellm is imported on the first call (it takes seconds) with its bundled
    price table (see agentflow.llm.pricing). litellm's own retries are turned
    off: retries belong to the engine, where they are journaled and backed off.
    ``api_base``/``api_key`` are used when a request does not carry its own;
    provider keys are otherwise read by litellm from the usual variables.
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        litellm_module: ModuleType | None = None,
    ) -> None:
        self._api_base = api_base
        self._api_key = api_key
        self._clock = clock
        self._litellm = litellm_module

    def _module(self) -> ModuleType:
        if self._litellm is None:
            self._litellm = load_litellm()
        return self._litellm

    def _kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [dict(m) for m in request.messages],
            "num_retries": 0,
            "max_retries": 0,
        }
        optional = {
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "api_base": request.api_base or self._api_base,
            "api_key": request.api_key or self._api_key,
            "timeout": request.timeout_seconds,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if request.idempotency_key:
            kwargs["extra_headers"] = {"Idempotency-Key": request.idempotency_key}
        if request.metadata:
            kwargs["metadata"] = dict(request.metadata)
        return kwargs

    async def complete(self, request: ModelRequest) -> ModelResponse:
        litellm = self._module()
        started = self._clock()
        try:
            response = await litellm.acompletion(**self._kwargs(request))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, request.model) from exc
        latency_ms = (self._clock() - started) * 1000.0
        try:
            text = response.choices[0].message.content or ""
        except (AttributeError, IndexError) as exc:
            raise ModelError(
                "BadModelResponse",
                f"model {request.model!r}: the response has no message content",
                retryable=True,
                model=request.model,
            ) from exc
        usage = getattr(response, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        hidden = getattr(response, "_hidden_params", None) or {}
        return ModelResponse(
            text=text,
            model=request.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self._cost(litellm, response, request.model, input_tokens, output_tokens),
            latency_ms=latency_ms,
            cached=bool(hidden.get("cache_hit")),
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


class FallbackClient:
    """Tries the request's model, then each fallback in order, on retryable errors.

    A non-retryable error (bad credentials, bad request) is raised at once:
    another model would not fix the caller's mistake. The answering model is
    ``ModelResponse.model``; the ones that failed first are ``failed_models``.
    """

    def __init__(self, client: ModelClient, fallbacks: Sequence[str] = ()) -> None:
        self._client = client
        self._fallbacks = tuple(fallbacks)

    def models_for(self, model: str) -> list[str]:
        ordered: list[str] = []
        for name in (model, *self._fallbacks):
            if name and name not in ordered:
                ordered.append(name)
        return ordered

    async def complete(self, request: ModelRequest) -> ModelResponse:
        failures: list[ModelError] = []
        for model in self.models_for(request.model):
            try:
                response = await self._client.complete(dataclasses.replace(request, model=model))
            except ModelError as exc:
                if not exc.retryable:
                    raise
                failures.append(exc)
                continue
            return dataclasses.replace(response, failed_models=tuple(e.model or "?" for e in failures))
        if len(failures) == 1:
            raise failures[0]
        summary = "; ".join(f"{e.model}: {e.type}" for e in failures)
        last = failures[-1]
        raise ModelError(
            last.type,
            f"every model failed ({summary}); last error: {last.message}",
            retryable=True,
            model=last.model,
        )
