"""The one shape of a model call, from the executor to the provider, and the two seams it crosses.

A chat completion is one :class:`ChatRequest` (OpenAI's chat-completions fields, checked once where it
enters) answered by one :class:`ModelResponse`. It crosses two seams, like httpx's transports::

    executor  --ChatClient.complete(ChatRequest)-->  the gateway  (HTTP: llm.gateway_client.GatewayClient;
                                                                   in-process: gateway.inprocess)
    gateway   --Upstream.complete(ChatRequest, Endpoint)-->  a provider  (llm.litellm_upstream, the
                                                                   offline model)
              --StreamingUpstream.stream(ChatRequest, Endpoint)-->  the same, streamed (llm.litellm_upstream)

The executor names the Agent's primary model; only the gateway picks among the Agent's models (fallback
order or bandit) and calls upstream with ``dataclasses.replace(request, model=candidate)`` and the
Endpoint (base URL and key) it resolved. Nothing else loops over models.

Messages are OpenAI's: ``{role, content}`` with role system/developer/user/assistant/tool; an assistant
message may carry ``tool_calls`` (then its content may be null) and a tool message a ``tool_call_id``.

Errors of this package::

    LLMError                      base; never raised itself
    ├── ModelError                a model call failed; .type, .retryable, .model
    ├── PromptRenderError         a prompt could not be rendered (agentflow.llm.prompts)
    └── OutputValidationError     the answer is not JSON matching the outputSchema (.path, .rule)

Provider exceptions become :class:`ModelError` in one place per provider client
(:func:`agentflow.llm.litellm_upstream.translate_error`, :func:`status_error` for HTTP answers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ROLES",
    "ChatClient",
    "ChatRequest",
    "Endpoint",
    "LLMError",
    "ModelError",
    "ModelResponse",
    "StreamDelta",
    "StreamingUpstream",
    "Upstream",
    "canonical_json",
    "merge_tool_call",
    "reported_tokens",
    "request_hash",
    "status_error",
    "tool_call_fragment",
    "written_tokens",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


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


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the encoding hashed everywhere in AgentFlow."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion: what determines the answer, and how to deliver it.

    The sampling fields are OpenAI's and mean what they mean there. ``response_format`` is OpenAI's object
    (``{"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}}``);
    :attr:`output_schema` is its schema. ``tools`` are OpenAI function tools
    (``{"type": "function", "function": {"name", "description", "parameters"}}``).

    Delivery only (never part of the answer's identity): ``timeout_seconds``, ``idempotency_key`` and the
    cache directives ``read_cache`` (Cache-Control: no-cache turns it off) and ``write_cache`` (no-store
    turns both off).
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    response_format: Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    read_cache: bool = True
    write_cache: bool = True

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("ChatRequest.model must name a model in litellm's naming, e.g. openai/gpt-4o-mini")
        if not self.messages:
            raise ValueError("ChatRequest.messages must hold at least one message")

    @property
    def output_schema(self) -> Mapping[str, Any] | None:
        """The JSON Schema of a ``json_schema`` response_format (None for text and json_object)."""
        fmt = self.response_format
        if not fmt or fmt.get("type") != "json_schema":
            return None
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return schema if isinstance(schema, Mapping) else None

    @property
    def wants_json(self) -> bool:
        """response_format asks for JSON (json_object or json_schema)."""
        fmt = self.response_format
        return fmt is not None and fmt.get("type") in ("json_object", "json_schema")

    def params(self) -> dict[str, Any]:
        """Every field besides model and messages that changes the answer (cache key, request hash)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop) if self.stop is not None else None,
            "seed": self.seed,
            "response_format": dict(self.response_format) if self.response_format is not None else None,
            "tools": [dict(t) for t in self.tools],
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
        }

    def openai_body(self) -> dict[str, Any]:
        """The request as an OpenAI chat-completions JSON body (fields left unset are omitted)."""
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in self.messages]}
        for name, value in self.params().items():
            if value is not None and value != []:
                body[name] = value
        return body


def request_hash(request: ChatRequest) -> str:
    """SHA-256 of what determines the answer: model, messages and every answer-changing parameter.

    Credentials, endpoint, timeout and delivery fields are left out, so the same call hashes the same from a
    laptop and from a cluster.
    """
    body = {"model": request.model, "messages": [dict(m) for m in request.messages], **request.params()}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class ModelResponse:
    """The answer of one model call. ``model`` is the model that actually answered.

    ``text`` is the assistant message's content ("" when it only called tools); ``tool_calls`` are OpenAI's
    ``{"id", "type": "function", "function": {"name", "arguments"}}`` (arguments a JSON string, as the model
    wrote it: the caller parses and checks it).
    """

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    failed_models: tuple[str, ...] = ()
    """Models the gateway tried first that failed with a retryable error."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    finish_reason: str = "stop"

    def message(self) -> dict[str, Any]:
        """The assistant message as OpenAI returns it (content null when it only called tools)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text if self.text or not self.tool_calls
                                   else None}
        if self.tool_calls:
            message["tool_calls"] = [dict(c) for c in self.tool_calls]
        return message


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the gateway sends a call: an OpenAI-compatible base URL (None: the provider's own) and the key.

    ``environment_key``: without ``api_key``, the provider client may use the key of this process's
    environment (OPENAI_API_KEY, ...). The gateway sets it only where the platform allows it
    (agentflow.gateway.endpoints); otherwise a call without a key is sent with none.
    """

    api_base: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    environment_key: bool = False


class ChatClient(Protocol):
    """The executor's side: makes one call through the gateway. Raises ModelError when it fails."""

    async def complete(self, request: ChatRequest) -> ModelResponse: ...


class Upstream(Protocol):
    """The gateway's side: one call to one model at one endpoint. Raises ModelError when it fails."""

    async def complete(self, request: ChatRequest, endpoint: Endpoint) -> ModelResponse: ...


@dataclasses.dataclass(frozen=True, slots=True)
class StreamDelta:
    """One piece of a streamed answer: text, and fragments of tool calls as OpenAI streams them
    (``{"index", "id"?, "type"?, "function": {"name"?, "arguments"?}}``: a call's first fragment names it,
    later ones with the same index append to its arguments)."""

    content: str = ""
    tool_calls: tuple[Mapping[str, Any], ...] = ()


def tool_call_fragment(data: Any) -> dict[str, Any]:
    """A streamed tool-call fragment (OpenAI's plain JSON) in the StreamDelta shape, unset fields left out."""
    data = data if isinstance(data, Mapping) else {}
    out: dict[str, Any] = {"index": int(data.get("index") or 0)}
    if data.get("id"):
        out["id"] = str(data["id"])
        out["type"] = "function"
    function = data.get("function")
    function = function if isinstance(function, Mapping) else {}
    out["function"] = {k: str(v) for k, v in function.items() if k in ("name", "arguments") and v}
    return out


def merge_tool_call(calls: dict[int, dict[str, Any]], fragment: Mapping[str, Any]) -> None:
    """Add a fragment (from :func:`tool_call_fragment`) to the tool calls assembled so far, keyed by index."""
    call = calls.setdefault(fragment["index"], {"id": "", "type": "function",
                                                "function": {"name": "", "arguments": ""}})
    if fragment.get("id"):
        call["id"] = fragment["id"]
    call["function"]["name"] += fragment["function"].get("name", "")
    call["function"]["arguments"] += fragment["function"].get("arguments", "")


@runtime_checkable
class StreamingUpstream(Upstream, Protocol):
    """An Upstream that can also stream. ``stream`` yields :class:`StreamDelta` pieces as the provider sends
    them and, last, the whole answer as a :class:`ModelResponse` (its text, tool calls, tokens and cost).
    It raises ModelError when the call fails (before or during the stream); closing the iterator early
    (``aclose``) ends the provider call."""

    def stream(self, request: ChatRequest, endpoint: Endpoint) -> AsyncIterator[StreamDelta | ModelResponse]: ...


MAX_REPORTED_TOKENS = 100_000_000
"""The most tokens one call may report for its prompt or its answer (no context window is near it): past it, the
provider's usage is refused (BadModelResponse), not charged."""


def reported_tokens(prompt: Any, completion: Any, model: str) -> tuple[int, int] | None:
    """A provider's (prompt, completion) usage, checked; None when it reports none or only zeros (litellm fills in
    zeros for a provider that sent no usage): the caller counts the call itself then, so such a provider is still
    charged. BadModelResponse for counts that are not whole numbers from 0 to MAX_REPORTED_TOKENS."""
    counts: list[int] = []
    for name, value in (("prompt_tokens", prompt), ("completion_tokens", completion)):
        value = 0 if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPORTED_TOKENS:
            raise ModelError("BadModelResponse", f"model {model!r}: the response's usage.{name} is "
                             f"{str(value)[:40]!r}, not a count of tokens (0 to {MAX_REPORTED_TOKENS:,})",
                             retryable=False, model=model)
        counts.append(value)
    return None if counts == [0, 0] else (counts[0], counts[1])


def written_tokens(text: str, tool_calls: Sequence[Mapping[str, Any]]) -> int:
    """An answer's tokens when the provider does not say: about four characters a token, its tool calls too."""
    written = len(text) + sum(len(str((c.get("function") or {}).get("arguments") or ""))
                              + len(str((c.get("function") or {}).get("name") or "")) for c in tool_calls)
    return (written + 3) // 4


def status_error(status: int, detail: str, model: str) -> ModelError:
    """The ModelError of an HTTP error answer from an OpenAI-compatible server (status and body text)."""
    hints = {
        400: ("BadModelRequest", False, "check the model name, parameters and prompt"),
        401: ("AuthenticationFailed", False, "check the Agent's model.credentialsSecretRef"),
        403: ("PermissionDenied", False, "check that the API key may use this model"),
        404: ("ModelNotFound", False, "check the Agent's model.name and model.apiBase"),
        408: ("ModelTimeout", True, "it is retried; raise the step's timeoutSeconds if it keeps happening"),
        413: ("ContextWindowExceeded", False, "shorten the step inputs or use a model with a larger context"),
        422: ("BadModelRequest", False, "check the model name, parameters and prompt"),
        429: ("RateLimited", True, "it is retried with backoff; raise the quota or add fallbacks"),
    }
    if status in hints:
        kind, retryable, hint = hints[status]
    elif status >= 500:
        kind, retryable, hint = ("ProviderUnavailable" if status in (502, 503, 504) else "ProviderError", True,
                                 "it is retried; add fallbacks to ride out outages")
    else:
        kind, retryable, hint = "BadModelRequest", False, "check the request"
    text = " ".join(detail.split())[:500] or "(no body)"
    return ModelError(kind, f"model {model!r}: HTTP {status}: {text} ({hint})", retryable=retryable, model=model)
