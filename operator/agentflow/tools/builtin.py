"""Tools implemented inside AgentFlow: ``text-search``, ``echo`` and ``json-extract``.

``text-search``  config ``{documents: [{id, title, text}], topK}``; inputs ``{query, topK?}``.
                 Okapi BM25 over lowercase, lightly stemmed word tokens of title + text; returns
                 ``[{id, title, score, snippet}]``, best first, only documents sharing a word
                 with the query.
``echo``         returns its inputs.
``json-extract`` config ``{path: "a.b[0]"}`` (or inputs.path); applied to ``inputs.document``
                 (a JSON value, or a string holding JSON).

Problems raise :class:`BuiltinToolError` with a ``type`` (InvalidToolConfig,
InvalidToolInput, JsonPathNotFound); the ToolRunner turns it into a ToolError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from agentflow.models import BuiltinTool

_WORD = re.compile(r"[a-z0-9]+")
_PATH_PART = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\[\"([^\"]*)\"\]")
_K1 = 1.5
_B = 0.75
_SNIPPET_CHARS = 160


class BuiltinToolError(ValueError):
    """A builtin tool cannot run with this config or these inputs (not retryable)."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type


def stem(word: str) -> str:
    """A light English suffix stripper, so refund/refunds/refunded and ship/shipping meet."""
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens, lightly stemmed."""
    return [stem(w) for w in _WORD.findall(text.lower())]


@dataclasses.dataclass(frozen=True)
class _Doc:
    id: str
    title: str
    text: str
    terms: Counter[str]
    length: int


class TextSearchIndex:
    """BM25 (k1=1.5, b=0.75) over a fixed set of documents."""

    def __init__(self, documents: Sequence[Mapping[str, Any]]) -> None:
        docs = []
        for i, raw in enumerate(documents):
            if not isinstance(raw, Mapping) or not isinstance(raw.get("text"), str):
                raise BuiltinToolError(
                    "InvalidToolConfig", f"text-search config.documents[{i}] needs a string 'text' (and id, title)"
                )
            doc_id = str(raw.get("id", i))
            title = str(raw.get("title", ""))
            tokens = tokenize(f"{title} {raw['text']}")
            docs.append(_Doc(doc_id, title, raw["text"], Counter(tokens), len(tokens)))
        self._docs = docs
        self._avg_len = sum(d.length for d in docs) / len(docs) if docs else 0.0
        df: Counter[str] = Counter()
        for doc in docs:
            df.update(doc.terms.keys())
        n = len(docs)
        self._idf = {term: math.log((n - f + 0.5) / (f + 0.5) + 1.0) for term, f in df.items()}

    def search(self, query: str, top_k: int) -> list[dict[str, Any]]:
        terms = list(dict.fromkeys(tokenize(query)))
        scored = []
        for doc in self._docs:
            score = 0.0
            for term in terms:
                tf = doc.terms.get(term, 0)
                if tf:
                    norm = tf + _K1 * (1 - _B + _B * doc.length / (self._avg_len or 1.0))
                    score += self._idf[term] * tf * (_K1 + 1) / norm
            if score > 0:
                scored.append((score, doc))
        scored.sort(key=lambda pair: (-pair[0], pair[1].id))
        return [
            {"id": doc.id, "title": doc.title, "score": round(score, 6), "snippet": _snippet(doc.text, terms)}
            for score, doc in scored[:top_k]
        ]


def _snippet(text: str, terms: Sequence[str]) -> str:
    """About 160 characters of ``text`` around the first query word found in it."""
    lowered = text.lower()
    hits = [m.start() for t in terms if (m := re.search(rf"\b{re.escape(t)}", lowered))]
    start = max(min(hits) - _SNIPPET_CHARS // 4, 0) if hits else 0
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(start + _SNIPPET_CHARS, len(text))
    return ("..." if start > 0 else "") + text[start:end].strip() + ("..." if end < len(text) else "")


def _positive_int(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BuiltinToolError("InvalidToolInput", f"{where} must be a positive integer, got {value!r}")
    return value


def parse_path(path: str) -> list[str | int]:
    """``a.b[0]`` / ``$.a["odd key"][2]`` into ['a', 'b', 0]."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _PATH_PART.match(text, pos)
        if match is None or match.end() == pos:
            raise BuiltinToolError(
                "InvalidToolConfig", f"json-extract path {path!r} is malformed at character {pos + 1}"
            )
        name, index, quoted = match.groups()
        parts.append(int(index) if index is not None else (quoted if quoted is not None else name))
        pos = match.end()
    return parts


def extract(document: Any, path: str) -> Any:
    """The value at ``path`` inside ``document``; JsonPathNotFound names the missing part."""
    value = document
    walked = "$"
    for part in parse_path(path):
        if isinstance(value, list) and isinstance(part, str) and part.isdigit():
            part = int(part)
        in_list = isinstance(value, list) and isinstance(part, int) and part < len(value)
        in_map = isinstance(value, Mapping) and isinstance(part, str) and part in value
        if not (in_list or in_map):
            shown = f"[{part}]" if isinstance(part, int) else f".{part}"
            raise BuiltinToolError(
                "JsonPathNotFound",
                f"json-extract: {walked}{shown} does not exist (at {walked} is a {type(value).__name__})",
            )
        value = value[part]
        walked += f"[{part}]" if isinstance(part, int) else f".{part}"
    return value


class Builtins:
    """Runs builtin tools; keeps one search index per distinct document set."""

    def __init__(self) -> None:
        self._indexes: dict[str, TextSearchIndex] = {}

    def run(self, builtin: BuiltinTool, inputs: Mapping[str, Any]) -> Any:
        if builtin.name == "echo":
            return dict(inputs)
        if builtin.name == "text-search":
            return self._text_search(builtin.config, inputs)
        if builtin.name == "json-extract":
            return self._json_extract(builtin.config, inputs)
        raise BuiltinToolError("InvalidToolConfig", f"unknown builtin tool {builtin.name!r}")

    def _index(self, documents: Any) -> TextSearchIndex:
        if not isinstance(documents, list):
            raise BuiltinToolError(
                "InvalidToolConfig", "text-search needs config.documents: a list of {id, title, text}"
            )
        key = hashlib.sha256(json.dumps(documents, sort_keys=True, default=str).encode()).hexdigest()
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = TextSearchIndex(documents)
        return index

    def _text_search(self, config: Mapping[str, Any], inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        query = inputs.get("query")
        if not isinstance(query, str) or not query.strip():
            raise BuiltinToolError("InvalidToolInput", "text-search needs inputs.query: a non-empty string")
        top_k = _positive_int(inputs.get("topK"), "inputs.topK", _positive_int(config.get("topK"), "config.topK", 3))
        return self._index(config.get("documents")).search(query, top_k)

    def _json_extract(self, config: Mapping[str, Any], inputs: Mapping[str, Any]) -> Any:
        path = config.get("path", inputs.get("path"))
        if not isinstance(path, str) or not path.strip():
            raise BuiltinToolError("InvalidToolConfig", "json-extract needs config.path (or inputs.path), e.g. a.b[0]")
        if "document" not in inputs:
            raise BuiltinToolError("InvalidToolInput", "json-extract needs inputs.document")
        document = inputs["document"]
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except ValueError as exc:
                raise BuiltinToolError(
                    "InvalidToolInput", f"json-extract inputs.document is a string but not JSON: {exc}"
                ) from exc
        return extract(document, path)
