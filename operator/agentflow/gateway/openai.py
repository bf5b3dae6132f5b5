"""The OpenAI chat-completions wire format of the gateway: request bodies in, completions out. Pure.

:func:`parse_chat_request` checks a body field by field and returns the :class:`~agentflow.llm.chat.ChatRequest`
it describes, or raises :class:`RequestError` naming every field it cannot accept (``param`` is the first;
the message lists them all). Accepted, and forwarded to the provider as given::

    model, messages                      messages: system/developer/user/assistant/tool; content a string, a list
                                         of text parts (joined into one string), or null on an assistant message
                                         that has tool_calls;
                                         assistant tool_calls [{id, type: function, function: {name, arguments}}];
                                         tool messages need tool_call_id; name on any message; refusal
                                         (a string, or null) on an assistant message
    temperature (0..2), top_p (0..1), max_tokens / max_completion_tokens (>= 1), stop (a string or up to 4),
    seed (an integer), n (only 1), response_format (text, json_object, json_schema with a schema object),
    tools (function tools with a name and a JSON-Schema object of parameters), tool_choice (none, auto,
    required, or {type: function, function: {name}} naming one of the tools), parallel_tool_calls (bool),
    stream (bool; stream_options {include_usage}), user (checked, never sent on: the provider sees the
    gateway as its caller, and it does not change the answer)

Anything else is refused rather than silently dropped. Headers: ``Idempotency-Key``, ``Cache-Control:
no-cache`` (do not read the cache) / ``no-store`` (neither read nor write it), ``X-AgentFlow-Timeout-Seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from ..llm.chat import ROLES, ChatRequest, ModelResponse, StreamDelta

__all__ = [
    "MAX_TIMEOUT_SECONDS",
    "ChunkWriter",
    "ParsedRequest",
    "RequestError",
    "completion_body",
    "parse_chat_request",
]

MAX_TIMEOUT_SECONDS = 3600.0
FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n",
    "response_format", "tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options", "user",
})
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class RequestError(ValueError):
    """A request field is wrong; ``param`` names the first (OpenAI's ``error.param``), the message all of them."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedRequest:
    chat: ChatRequest
    stream: bool = False
    include_usage: bool = False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, param: str, message: str) -> None:
        self.items.append((param, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first = self.items[0][0]
        message = "; ".join(f"{p}: {m}" for p, m in self.items)
        raise RequestError(first, message)


def _content(value: Any, where: str, problems: _Problems) -> Any:
    """A string; text parts are joined into one (what the provider sees is the same text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                problems.add(f"{where}[{i}]", "content parts must be {type: text, text: string} (images, audio and "
                             "files are not supported)")
            else:
                texts.append(part["text"])
        return "".join(texts)
    problems.add(where, "must be a string or a list of text parts")
    return value


def _tool_calls(value: Any, where: str, problems: _Problems) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        problems.add(where, "must be a non-empty list of {id, type: function, function: {name, arguments}}")
        return []
    out = []
    for i, call in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(call, dict):
            problems.add(here, "must be an object")
            continue
        function = call.get("function")
        if not isinstance(call.get("id"), str) or not call.get("id"):
            problems.add(f"{here}.id", "must be a non-empty string")
        if call.get("type", "function") != "function":
            problems.add(f"{here}.type", "must be function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not isinstance(
                function.get("arguments"), str):
            problems.add(f"{here}.function", "must be {name: string, arguments: string (JSON)}")
            continue
        out.append({"id": call["id"], "type": "function",
                    "function": {"name": function["name"], "arguments": function["arguments"]}})
    return out


def _messages(value: Any, problems: _Problems) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        problems.add("messages", "must be a non-empty list of {role, content} objects")
        return []
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.add(where, "must be an object {role, content}")
            continue
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = repr(role)[:40] if isinstance(role, str | None) else f"a {type(role).__name__}"
            problems.add(f"{where}.role", f"must be one of {', '.join(sorted(ROLES))}, got {shown}")
            continue
        allowed = {"role", "content", "name"}
        if role == "assistant":
            allowed |= {"tool_calls", "refusal"}
        if role == "tool":
            allowed |= {"tool_call_id"}
        for extra in sorted(message.keys() - allowed):
            problems.add(f"{where}.{extra}", f"is not supported on a {role} message")
        checked: dict[str, Any] = {"role": role}
        if "name" in message:
            if not isinstance(message["name"], str):
                problems.add(f"{where}.name", "must be a string")
            checked["name"] = message["name"]
        calls = message.get("tool_calls")
        content = message.get("content")
        if role == "assistant" and calls is not None:
            checked["tool_calls"] = _tool_calls(calls, f"{where}.tool_calls", problems)
            checked["content"] = None if content is None else _content(content, f"{where}.content", problems)
        elif content is None:
            problems.add(f"{where}.content", "is required (null only on an assistant message with tool_calls)")
        else:
            checked["content"] = _content(content, f"{where}.content", problems)
        refusal = message.get("refusal")
        if refusal is not None:  # an earlier answer's refusal, sent back as the model gave it
            if not isinstance(refusal, str):
                problems.add(f"{where}.refusal", "must be a string or null")
            checked["refusal"] = refusal
        if role == "tool":
            if not isinstance(message.get("tool_call_id"), str) or not message.get("tool_call_id"):
                problems.add(f"{where}.tool_call_id", "is required on a tool message")
            else:
                checked["tool_call_id"] = message["tool_call_id"]
        out.append(checked)
    return out


def _tools(value: Any, problems: _Problems) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.add("tools", "must be a list of function tools")
        return []
    out, names = [], set()
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            problems.add(where, "must be {type: function, function: {name, description, parameters}}")
            continue
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            problems.add(f"{where}.function.name", "must be 1-64 of letters, digits, _ and -")
            continue
        if name in names:
            problems.add(f"{where}.function.name", f"duplicate tool name {name!r}")
        names.add(name)
        unknown = sorted(function.keys() - {"name", "description", "parameters", "strict"})
        for extra in unknown:
            problems.add(f"{where}.function.{extra}", "is not supported")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            problems.add(f"{where}.function.parameters", "must be a JSON Schema object")
        if "description" in function and not isinstance(function["description"], str):
            problems.add(f"{where}.function.description", "must be a string")
        out.append({"type": "function", "function": dict(function)})
    return out


def _response_format(value: Any, problems: _Problems) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.add("response_format", "must be an object with a type (text, json_object or json_schema)")
        return None
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        problems.add("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")
        return None
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        problems.add("response_format.json_schema.schema", "must be an object (the JSON Schema)")
        return None
    return {"type": "json_schema", "json_schema": dict(spec)}


def parse_chat_request(body: Any, headers: Mapping[str, str]) -> ParsedRequest:
    """The request a body and its headers describe; RequestError naming every field it cannot accept."""
    if not isinstance(body, dict):
        raise RequestError(None, f"the body must be a JSON object, got {type(body).__name__}")
    problems = _Problems()
    for name in sorted(body.keys() - FIELDS):
        problems.add(name, "is not supported by the AgentFlow gateway")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        problems.add("model", "must be a non-empty string naming one of the Agent's models")
    messages = _messages(body.get("messages"), problems)
    temperature = body.get("temperature")
    if temperature is not None and (not _number(temperature) or not 0 <= temperature <= 2):
        problems.add("temperature", f"must be a number from 0 to 2, got {temperature!r}")
    top_p = body.get("top_p")
    if top_p is not None and (not _number(top_p) or not 0 <= top_p <= 1):
        problems.add("top_p", f"must be a number from 0 to 1, got {top_p!r}")
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            problems.add(name, f"must be an integer >= 1, got {value!r}")
        elif max_tokens is not None and value != max_tokens:
            problems.add(name, "max_tokens and max_completion_tokens disagree; send one")
        else:
            max_tokens = value
    stop = body.get("stop")
    stops: tuple[str, ...] | None = None
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and 1 <= len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    elif stop is not None:
        problems.add("stop", "must be a string or a list of 1 to 4 strings")
    seed = body.get("seed")
    if seed is not None and type(seed) is not int:
        problems.add("seed", f"must be an integer, got {seed!r}")
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        problems.add("n", f"only n = 1 is supported, got {n!r}")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        problems.add("stream", "must be true or false")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or sorted(options.keys() - {"include_usage"}) or not isinstance(
                options.get("include_usage", False), bool):
            problems.add("stream_options", "must be {include_usage: bool}")
        elif stream is not True:
            problems.add("stream_options", "is only allowed with stream: true")
        else:
            include_usage = bool(options.get("include_usage", False))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        problems.add("user", "must be a string")
    fmt = _response_format(body["response_format"], problems) if body.get("response_format") is not None else None
    tools = _tools(body["tools"], problems) if body.get("tools") is not None else []
    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        if isinstance(tool_choice, str):
            if tool_choice not in ("none", "auto", "required"):
                problems.add("tool_choice", f"must be none, auto, required or a function, got {tool_choice!r}")
            elif tool_choice == "required" and not tools:
                problems.add("tool_choice", "required needs tools")
        elif isinstance(tool_choice, dict):
            function = tool_choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if tool_choice.get("type") != "function" or not isinstance(name, str):
                problems.add("tool_choice", "must be {type: function, function: {name}}")
            elif name not in {t["function"]["name"] for t in tools}:
                problems.add("tool_choice.function.name", f"{name!r} is not one of the request's tools")
        else:
            problems.add("tool_choice", "must be a string or an object")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        problems.add("parallel_tool_calls", "must be true or false")
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
            problems.add("X-AgentFlow-Timeout-Seconds",
                         f"must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS:.0f}], got {raw_timeout!r}")
    problems.raise_if_any()
    key = headers.get("Idempotency-Key")
    assert isinstance(model, str)
    chat = ChatRequest(
        model=model.strip(),
        messages=tuple(messages),
        temperature=float(temperature) if temperature is not None else None,
        top_p=float(top_p) if top_p is not None else None,
        max_tokens=max_tokens,
        stop=stops,
        seed=seed,
        response_format=fmt,
        tools=tuple(tools),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        timeout_seconds=timeout,
        idempotency_key=key.strip()[:512] if key and key.strip() else None,
        read_cache="no-cache" not in directives and not no_store,
        write_cache=not no_store,
    )
    return ParsedRequest(chat, stream=bool(stream), include_usage=include_usage)


def _finish(answer: ModelResponse) -> str:
    return "tool_calls" if answer.tool_calls else (answer.finish_reason or "stop")


def _usage(answer: ModelResponse) -> dict[str, int]:
    return {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens}


def completion_body(answer: ModelResponse, request_id: str, created: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "choices": [{"index": 0, "message": answer.message(), "finish_reason": _finish(answer), "logprobs": None}],
        "usage": _usage(answer),
    }


class ChunkWriter:
    """The server-sent events of one streamed answer, as OpenAI sends them: ``data: {chunk}\\n\\n``, a
    ``chat.completion.chunk`` with the role first, one per piece, one with the finish reason, the usage when
    asked (``stream_options.include_usage``: no choices), then ``data: [DONE]``."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def _event(self, body: Mapping[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def _chunk(self, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        return self._event({**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def piece(self, piece: StreamDelta) -> bytes:
        delta: dict[str, Any] = {}
        if piece.content:
            delta["content"] = piece.content
        if piece.tool_calls:
            delta["tool_calls"] = [dict(c) for c in piece.tool_calls]
        return self._chunk(delta)

    def end(self, answer: ModelResponse, include_usage: bool) -> bytes:
        out = self._chunk({}, _finish(answer))
        if include_usage:
            out += self._event({**self._base, "choices": [], "usage": _usage(answer)})
        return out + b"data: [DONE]\n\n"

    def error(self, type: str, message: str, retryable: bool) -> bytes:
        """The event of a stream that failed mid-way (OpenAI clients raise it); no [DONE] follows."""
        return self._event({"error": {"message": message, "type": type, "param": None, "code": type,
                                      "retryable": retryable}})
