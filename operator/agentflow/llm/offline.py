"""The built-in offline model ``agentflow/offline``. NOT A REAL MODEL.

It exists so that the quickstart and the examples run with no API key and no
network. It does not understand anything: its answers are built mechanically
from the request, and are the same for the same messages on every machine
(every choice is drawn from SHA-256 of the messages; nothing depends on
``PYTHONHASHSEED``, the clock or a random generator).

* With an output schema, it answers JSON valid against the schema: objects
  with their properties, enums picked by keyword overlap with the user's text
  (``refund`` favours ``billing``, ``fraud`` favours ``high``/``block``) or else
  by hash, numbers inside their bounds (``risk``-like fields lean on alarm words
  such as ``fraud`` or ``urgent``; ``confidence``, ``probability`` and
  ``certainty`` are 0.72 to 0.98 of their range when the text has a word of a
  known topic, such as ``charged`` or ``parcel``, and 0.35 to 0.65 when it has
  none: a vague request is an unsure one, so "Something is off, please help"
  escalates to a human in examples/manifests/customer-support.yaml; ``score``,
  ``quality`` and ``rating`` 0.6 to 0.98), strings made of the first words of
  the user message prefixed ``[offline]``, arrays of ``minItems`` (at least
  one) items. ``pattern`` is not honoured.
* Without a schema, a text reply starting ``[offline model]`` that quotes the
  start of the user message (and, in an agent loop, what the tools answered).
* Offered tools (an agent loop), it calls the ones it is told to: a directive
  ``[[call NAME]]`` or ``[[call NAME {"json": "arguments"}]]`` in the system or
  user messages asks for one call of NAME (arguments made from the function's
  parameters schema when none are given), ``[[call NAME always]]`` for a call on
  every turn (an endless loop, for tests of the bounds). Directed tools not yet
  called are called together in one turn (one per turn when parallel tool calls
  are off); once each has been called it answers. With ``tool_choice:
  required`` and a ``final_answer`` function it answers through it.
* Asked for a summary (a system message starting with ``SUMMARY_PREFIX``: an Agent's conversation compacted), the
  first words of each line of the transcript, in order, within the request's max_tokens. A tool call the summary
  quotes (``called NAME(``) counts as made: the directed tools are not called again after their turns were
  compacted.

* Told what to answer, it answers that: ``[[answer]]TEXT[[/answer]]`` in the system or user messages is its
  answer, word for word, whatever the schema (a planning Agent's plan in tests and examples, a valid or a hostile
  one). Several directives are answers to successive turns: the n-th is its answer when the request holds n-1
  assistant messages (a repair request after a refused first answer gets the second), the last one thereafter.

Tokens are counted as characters / 4 (cheap and deterministic); cost is 0.
Select a real provider by setting its API key (see agentflow.llm.make_model_client).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentflow.engine.conversation import SUMMARY_HEADER
from agentflow.engine.schemas import is_valid

from .chat import ChatRequest, Endpoint, ModelResponse, canonical_json
from .prompts import REPAIR_PREFIX, SUMMARY_PREFIX

OFFLINE_MODEL_NAME = "agentflow/offline"

_WORD = re.compile(r"[a-z0-9]+")
_MAX_DEPTH = 6
_EARLY = 40
_LONG_TEXT_FIELDS = frozenset(
    {"summary", "response", "reply", "answer", "body", "text", "content", "draft", "message"}
    | {"explanation", "reason", "rationale", "article", "description", "combined", "notes"}
)
# Words in the user's text that make related enum values likelier (keyword overlap).
_RELATED: dict[str, tuple[str, ...]] = {
    "billing": ("refund", "charge", "charged", "invoice", "payment", "paid", "bill", "price", "subscription"),
    "refund": ("refund", "money", "return", "charged", "reimburse"),
    "fraud": ("fraud", "stolen", "unauthorized", "scam", "suspicious", "chargeback", "phishing"),
    "technical": ("error", "bug", "crash", "broken", "fails", "failing", "outage", "down", "app", "login"),
    "shipping": ("delivery", "package", "shipping", "shipped", "tracking", "arrived", "courier", "parcel"),
    "account": ("account", "password", "login", "email", "profile", "locked", "username"),
    "high": ("urgent", "asap", "soon", "immediately", "emergency", "critical", "fraud", "stolen", "unauthorized"),
    "urgent": ("urgent", "asap", "immediately", "emergency", "critical"),
    "critical": ("critical", "emergency", "outage", "down", "fraud"),
    "low": ("whenever", "curious", "minor", "suggestion", "wondering"),
    "block": ("fraud", "stolen", "unauthorized", "scam", "suspicious"),
    "escalate": ("urgent", "fraud", "angry", "lawyer", "complaint", "legal"),
    "negative": ("angry", "bad", "terrible", "awful", "disappointed", "hate", "worst"),
    "positive": ("great", "thanks", "love", "happy", "excellent", "wonderful"),
}
_ALARM = frozenset(
    {"fraud", "stolen", "unauthorized", "unauthorised", "scam", "suspicious", "chargeback"}
    | {"urgent", "emergency", "critical", "lawsuit"}
)
# A text with any of these words names a topic the model is "confident" about (confidence-like fields).
_TOPICAL = frozenset(word for words in _RELATED.values() for word in words)
_RISK_FIELDS = ("risk", "fraud", "urgency", "severity", "priority", "danger")
_CERTAINTY_FIELDS = ("confidence", "probability", "certainty")
_CONFIDENCE_FIELDS = ("confidence", "probability", "certainty", "score", "quality", "rating")


def _num(value: Any) -> float | None:
    """A numeric schema bound (booleans, as in draft-04 exclusiveMinimum, are not bounds)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count_tokens(text: str) -> int:
    return len(text) // 4


class OfflineModel:
    """A ModelClient that answers deterministically without any network. Not a real model."""

    name = OFFLINE_MODEL_NAME

    def __init__(
        self,
        *,
        token_counter: Callable[[str], int] = _count_tokens,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = token_counter
        self._clock = clock

    async def complete(self, request: ChatRequest, endpoint: Endpoint | None = None) -> ModelResponse:
        """Answer ``request`` (an :class:`~agentflow.llm.chat.Upstream`; the endpoint is ignored)."""
        started = self._clock()
        prompt_text = "".join(_content(m) for m in request.messages)
        calls = self.tool_calls(request)
        if calls:
            arguments = "".join(c["function"]["arguments"] for c in calls)
            return ModelResponse(text="", model=OFFLINE_MODEL_NAME, input_tokens=self._count(prompt_text),
                                 output_tokens=self._count(arguments), cost_usd=0.0,
                                 latency_ms=(self._clock() - started) * 1000.0, tool_calls=tuple(calls),
                                 finish_reason="tool_calls")
        directed = directed_answer(request.messages)
        if directed is not None:
            return ModelResponse(text=directed, model=OFFLINE_MODEL_NAME, input_tokens=self._count(prompt_text),
                                 output_tokens=self._count(directed), cost_usd=0.0,
                                 latency_ms=(self._clock() - started) * 1000.0)
        schema = request.output_schema
        if schema is None and request.wants_json:
            schema = {"type": "object"}
        if request.messages and _content(request.messages[0]).startswith(SUMMARY_PREFIX):
            text = self.summary(request.messages, request.max_tokens)
        else:
            text = self.answer(request.messages, schema)
        return ModelResponse(
            text=text,
            model=OFFLINE_MODEL_NAME,
            input_tokens=self._count(prompt_text),
            output_tokens=self._count(text),
            cost_usd=0.0,
            latency_ms=(self._clock() - started) * 1000.0,
        )

    def tool_calls(self, request: ChatRequest) -> list[dict[str, Any]]:
        """The calls it makes of the offered tools (see the module docstring): deterministic in the request."""
        offered = {str((t.get("function") or {}).get("name")): dict(t.get("function") or {}) for t in request.tools}
        if not offered:
            return []
        called = [str((c.get("function") or {}).get("name")) for m in request.messages if m.get("role") == "assistant"
                  for c in (m.get("tool_calls") or ()) if isinstance(c, Mapping)]
        called += [name for m in request.messages if m.get("role") == "user"  # turns compacted into a summary
                   and _content(m).startswith(SUMMARY_HEADER) for name in _CALLED.findall(_content(m))]
        wanted: list[tuple[str, str | None]] = []
        for message in request.messages:
            if message.get("role") not in ("system", "user"):
                continue
            for match in _DIRECTIVE.finditer(_content(message)):
                name, args = match.group(1), (match.group(2) or "").strip() or None
                if name in offered and (args == "always" or name not in called) and (name, args) not in wanted:
                    wanted.append((name, args))
        seed = hashlib.sha256(canonical_json(list(request.messages))).hexdigest()
        if not wanted and request.tool_choice == "required" and "final_answer" in offered:
            wanted = [("final_answer", None)]
        if request.parallel_tool_calls is False:
            wanted = wanted[:1]
        calls = []
        for i, (name, args) in enumerate(wanted):
            if args is None or args == "always":
                parameters = offered[name].get("parameters") or {"type": "object"}
                value = _Generator(hashlib.sha256(f"{seed}/{name}".encode()).digest(), _user_text(request.messages),
                                   parameters).generate()
                args = json.dumps(value, ensure_ascii=False)
            calls.append({"id": f"call_{seed[:8]}_{i}", "type": "function",
                          "function": {"name": name, "arguments": args}})
        return calls

    def summary(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None) -> str:
        """A summary request's answer (memory.kind conversation): the start of each transcript line, in order, cut to
        ``max_tokens`` (4 characters each). Mechanical and deterministic: not a summary a model would write."""
        lines = _user_text(messages).splitlines()
        text = "[offline summary] " + " | ".join(" ".join(line.split()[:12]) for line in lines if line.strip())
        limit = 4 * max_tokens if max_tokens else len(text)
        return text if len(text) <= limit else text[:max(limit - 4, 0)] + " ..."

    def answer(self, messages: Sequence[Mapping[str, Any]], output_schema: Mapping[str, Any] | None) -> str:
        """The answer text: pure and deterministic in (messages, output_schema).

        PII tokens (``<EMAIL_ADDRESS_3f9a1c2b7d>``) are keyed per run, so they are read without their key
        part: the same visible input gets the same answer in every run.
        """
        visible = [{**m, "content": _PII_TOKEN.sub(r"<\1>", _content(m))} for m in messages]
        seed = hashlib.sha256(canonical_json(visible)).digest()
        user = _user_text(messages)  # quoted words keep their tokens: the step output gets the values back
        if output_schema is None:
            words = user.split()
            quoted = " ".join(words[:30]) + (" ..." if len(words) > 30 else "")
            tools = [_content(m) for m in messages if m.get("role") == "tool"]
            heard = f" The tools answered: {' | '.join(t[:120] for t in tools)}" if tools else ""
            return (
                f"[offline model] A placeholder reply (ref {seed.hex()[:8]}), not a real model's answer. "
                f'The request ({len(words)} words) began: "{quoted}"{heard}'
            )
        value = _Generator(seed, user, output_schema).generate()
        return json.dumps(value, ensure_ascii=False)


_ANSWER = re.compile(r"\[\[answer\]\](.*?)\[\[/answer\]\]", re.DOTALL)


def directed_answer(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The answer ``[[answer]]TEXT[[/answer]]`` directives in the system and user messages give this turn, if any."""
    answers = [m.group(1).strip() for message in messages if message.get("role") in ("system", "user")
               for m in _ANSWER.finditer(_content(message))]
    if not answers:
        return None
    turn = sum(1 for message in messages if message.get("role") == "assistant")
    return answers[min(turn, len(answers) - 1)]


_CALLED = re.compile(r"\bcalled ([A-Za-z0-9_-]+)\(")
"""A tool call as a summary transcript writes it (agentflow.llm.prompts.transcript_line)."""
_DIRECTIVE = re.compile(r"\[\[call ([A-Za-z0-9_-]+)\s*(always|\{.*?\})?\s*\]\]", re.DOTALL)
_PII_TOKEN = re.compile(r"<([A-Z][A-Z_]*[A-Z])_[0-9a-f]{10}>")


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The user's words: user messages except AgentFlow's own repair requests."""
    users = [m["content"] for m in messages if m.get("role") == "user" and not m["content"].startswith(REPAIR_PREFIX)]
    return "\n".join(users)


class _Generator:
    """Builds one JSON value for a schema; every choice is a hash of (seed, path)."""

    def __init__(self, seed: bytes, user_text: str, root: Mapping[str, Any]) -> None:
        self._seed = seed
        self._root = root
        # Each word weighs 1.0 when it occurs among the first _EARLY words of the user's text
        # (usually what the user actually asked), 0.5 when only later (pasted context).
        self._weights: dict[str, float] = {}
        for position, word in enumerate(_WORD.findall(user_text.lower())):
            weight = 1.0 if position < _EARLY else 0.5
            self._weights[word] = max(weight, self._weights.get(word, 0.0))
        self._alarm = bool(self._weights.keys() & _ALARM)
        self._topical = bool(self._weights.keys() & _TOPICAL)
        plain = " ".join(user_text.split())
        self._summary_words = plain.split() or ["(empty", "request)"]
        self._sentences = [x for x in re.split(r"(?<=[.!?])\s+|\n+", user_text) if x.strip()]

    def generate(self) -> Any:
        return self._value(self._root, "$", "", 0)

    def _fraction(self, path: str) -> float:
        digest = hashlib.sha256(self._seed + path.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _pick(self, path: str, n: int) -> int:
        return min(int(self._fraction(path) * n), n - 1)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = self._root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        return target if isinstance(target, Mapping) else {}

    def _value(self, schema: Any, path: str, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return self._string({}, path, name)
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._enum(schema["enum"], path)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self._resolve(part) if isinstance(part, Mapping) else {}
                for key, value in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required":
                        merged["required"] = [*merged.get("required", []), *value]
                    else:
                        merged.setdefault(key, value)
            return self._value(merged, path, name, depth)
        for key in ("oneOf", "anyOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self._first_valid(options, path, name, depth)
        kind = self._type(schema)
        if kind == "object":
            return self._object(schema, path, depth)
        if kind == "array":
            return self._array(schema, path, name, depth)
        if kind in ("number", "integer"):
            return self._number(schema, path, name, kind == "integer")
        if kind == "boolean":
            return self._pick(path, 2) == 1
        if kind == "null":
            return None
        return self._string(schema, path, name)

    def _first_valid(self, options: list[Any], path: str, name: str, depth: int) -> Any:
        candidates = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")] or options
        first = self._value(candidates[0], path, name, depth)
        for option in candidates:
            value = self._value(option, path, name, depth)
            if isinstance(option, Mapping) and is_valid(option, value):
                return value
        return first

    @staticmethod
    def _type(schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            declared = next((t for t in declared if t != "null"), declared[0] if declared else None)
        if isinstance(declared, str):
            return declared
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return "string"

    def _enum(self, values: list[Any], path: str) -> Any:
        scores = []
        for value in values:
            tokens = _WORD.findall(str(value).lower())
            score = sum(2 * self._weights.get(t, 0.0) for t in tokens)
            score += sum(self._weights.get(related, 0.0) for t in tokens for related in _RELATED.get(t, ()))
            scores.append(score)
        best = max(scores)
        tied = [v for v, s in zip(values, scores, strict=True) if s == best]
        return tied[self._pick(path, len(tied))]

    def _object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        names = list(required) if depth >= _MAX_DEPTH else [*properties, *(r for r in required if r not in properties)]
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key in names:
            sub = properties.get(key, extra if isinstance(extra, Mapping) else {})
            out[key] = self._value(sub, f"{path}.{key}", key, depth + 1)
        min_props = int(schema.get("minProperties") or 0)
        i = 0
        while len(out) < min_props and extra is not False:
            out[f"extra_{i}"] = self._value(
                extra if isinstance(extra, Mapping) else {}, f"{path}.extra_{i}", "", depth + 1
            )
            i += 1
        return out

    def _array(self, schema: Mapping[str, Any], path: str, name: str, depth: int) -> list[Any]:
        raw_prefix = schema.get("prefixItems")
        prefix: list[Any] = raw_prefix if isinstance(raw_prefix, list) else []
        items = schema.get("items", {})
        min_items = int(schema.get("minItems") or 0)
        max_items = schema.get("maxItems")
        count = max(min_items, len(prefix), 1 if depth < _MAX_DEPTH else min_items)
        if isinstance(max_items, int):
            count = min(count, max_items)
        out: list[Any] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else (items if items is not False else {})
            value = self._value(sub, f"{path}[{i}]", name, depth + 1)
            if schema.get("uniqueItems") and value in out:
                value = self._unique(sub, value, out, f"{path}[{i}]", name, depth + 1)
            out.append(value)
        return out

    def _unique(self, schema: Any, value: Any, taken: list[Any], path: str, name: str, depth: int) -> Any:
        """Another value for ``schema`` not in ``taken`` (uniqueItems), when one can be found cheaply."""
        resolved = self._resolve(schema) if isinstance(schema, Mapping) else {}
        for option in resolved.get("enum") or []:
            if option not in taken:
                return option
        if "enum" in resolved or "const" in resolved:
            return value
        if isinstance(value, bool):
            return not value if (not value) not in taken else value
        for salt in range(1, 16):
            candidate = self._value(schema, f"{path}~{salt}", name, depth)
            if candidate not in taken:
                return candidate
        if isinstance(value, list | dict) and resolved:
            varied = self._vary(resolved, value, taken, path, name, depth)
            if varied is not None:
                return varied
        if isinstance(value, int | float) and resolved:
            step = _num(resolved.get("multipleOf")) or 1
            for k in range(1, 33):
                for candidate in (value + k * step, value - k * step):
                    if isinstance(value, int) and float(candidate).is_integer():
                        candidate = int(candidate)
                    if candidate not in taken and is_valid(resolved, candidate):
                        return candidate
        return value

    def _vary(self, schema: Mapping[str, Any], value: list[Any] | dict[str, Any], taken: list[Any], path: str,
              name: str, depth: int) -> Any:
        """``value`` (an array or object) with one member changed to another valid value, so that it is not in
        ``taken``; None when no single change does it."""
        if isinstance(value, list):
            items = schema.get("items")
            raw_prefix = schema.get("prefixItems")
            prefix: list[Any] = raw_prefix if isinstance(raw_prefix, list) else []
            slots: list[tuple[Any, Any]] = [(i, prefix[i] if i < len(prefix) else items or {})
                                            for i in range(len(value))]
        else:
            raw_props = schema.get("properties")
            props: Mapping[str, Any] = raw_props if isinstance(raw_props, Mapping) else {}
            slots = [(k, props.get(k, {})) for k in value]
        for key, sub in slots:
            old = value[key]
            seen = [old, *(t[key] for t in taken if (isinstance(t, list) and isinstance(key, int) and key < len(t))
                           or (isinstance(t, dict) and key in t))]
            other = self._unique(sub, old, seen, f"{path}.{key}", str(key) if isinstance(value, dict) else name,
                                 depth + 1)
            if other == old:
                continue
            candidate: Any = list(value) if isinstance(value, list) else dict(value)
            candidate[key] = other
            if candidate not in taken and is_valid(schema, candidate):
                return candidate
        return None

    def _number(self, schema: Mapping[str, Any], path: str, name: str, integer: bool) -> int | float:
        lo_in, lo_ex = _num(schema.get("minimum")), _num(schema.get("exclusiveMinimum"))
        hi_in, hi_ex = _num(schema.get("maximum")), _num(schema.get("exclusiveMaximum"))
        lows = [b for b in (lo_in, lo_ex) if b is not None]
        highs = [b for b in (hi_in, hi_ex) if b is not None]
        lowered = name.lower()
        default_span = 1.0 if lowered == "confidence" else 100.0
        lo = max(lows) if lows else (min(highs) - default_span if highs else 0.0)
        hi = min(highs) if highs else lo + default_span
        hi = max(hi, lo)
        frac = self._fraction(path)
        if any(word in lowered for word in _RISK_FIELDS):
            frac = 0.82 + 0.16 * frac if self._alarm else 0.05 + 0.3 * frac
        elif any(word in lowered for word in _CONFIDENCE_FIELDS):
            if any(word in lowered for word in _CERTAINTY_FIELDS):
                frac = 0.72 + 0.26 * frac if self._topical else 0.35 + 0.3 * frac
            else:  # a quality score or a rating
                frac = 0.6 + 0.38 * frac
        else:
            frac = 0.1 + 0.8 * frac
        target = lo + (hi - lo) * frac

        def allowed(v: float) -> bool:
            return (
                (lo_in is None or v >= lo_in)
                and (lo_ex is None or v > lo_ex)
                and (hi_in is None or v <= hi_in)
                and (hi_ex is None or v < hi_ex)
            )

        step = _num(schema.get("multipleOf"))
        if step is not None and step > 0:
            k_lo, k_hi = math.ceil(lo / step), math.floor(hi / step)
            ks = sorted(range(k_lo, k_hi + 1), key=lambda k: abs(k * step - target)) if k_hi >= k_lo else [k_lo]
            k = next((k for k in ks[:3] if allowed(k * step)), ks[0])
            value = k * step
            return round(value) if integer else (int(value) if float(value).is_integer() else value)
        if integer:
            candidates = [round(target), math.floor(target), math.ceil(target), math.ceil(lo), math.floor(hi)]
            return int(next((c for c in candidates if allowed(c)), round(target)))
        rounded = round(target, 2)
        return rounded if allowed(rounded) else target

    def _string(self, schema: Mapping[str, Any], path: str, name: str) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2024-01-01T00:00:00Z"
        if fmt == "date":
            return "2024-01-01"
        if fmt == "email":
            return "offline@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/offline"
        if fmt == "uuid":
            return "00000000-0000-4000-8000-" + hashlib.sha256(self._seed + path.encode()).hexdigest()[:12]
        limit = 40 if name.lower() in _LONG_TEXT_FIELDS else 12
        source = self._summary_words
        # Items of an array differ: "(2)", "(1.3)", ... from the array indices (and salts) in the path.
        ordinals = [int(index or salt) for index, salt in re.findall(r"\[(\d+)\]|~(\d+)", path)]
        item = re.search(r"\[(\d+)\]$", path)
        if item and len(self._sentences) > 1:
            # A list of strings (key points, themes...): successive sentences of the user's text.
            n = int(item.group(1))
            source = self._sentences[n % len(self._sentences)].split()
            ordinals[-1] = n // len(self._sentences)
            limit = 25
        text = "[offline] " + " ".join(source[:limit]) + (" ..." if len(source) > limit else "")
        suffix = f" ({'.'.join(str(n + 1) for n in ordinals)})" if any(ordinals) else ""
        min_len = int(schema.get("minLength") or 0)
        max_len = schema.get("maxLength")
        if len(text + suffix) < min_len:
            text += " offline" * (1 + (min_len - len(text + suffix)) // 8)
        if isinstance(max_len, int):
            text = text[: max(max_len - len(suffix), 0)] + suffix if len(suffix) <= max_len else text[:max_len]
        else:
            text += suffix
        return text
