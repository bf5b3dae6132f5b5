"""What long-term memory holds and returns, and the rules every store applies. Pure: no I/O, no clock.

    Scope(namespace, agent)        whose memories: one Agent of one namespace (agent None: the whole namespace,
                                   for erasure only)
    MemoryHit                      a search result, a plain JSON dict: {id, text, metadata, score, createdAt, tokens}
    MemoryEntry                    a stored fact as listed: {id, namespace, agent, text, metadata, createdAt,
                                   expiresAt, embeddingModel}
    within_budget(hits, budget)    the best hits whose tokens fit, in rank order (a hit that does not fit is
                                   skipped, a smaller one after it may still fit)
    mentions(subject, text, meta)  whether a fact mentions a subject: the subject as a whole word (or words),
                                   any case, in the text or in any metadata value

Errors::

    MemoryStoreError          the base; .type names it, .retryable says whether trying again can help
      InvalidMemory           empty or oversized text, metadata that is not a JSON object of plain values,
                              a bad k or token budget, an id that is not a memory id
      MemoryUnavailable       the store cannot be reached or refused (retryable)
      EmbeddingError          the embedding of a text failed (retryable when the embedder says so)
      MemoryNotFound          forget by id: no such memory in that scope
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_TEXT",
    "EmbeddingError",
    "InvalidMemory",
    "MemoryEntry",
    "MemoryHit",
    "MemoryNotFound",
    "MemoryStoreError",
    "MemoryUnavailable",
    "Scope",
    "approximate_tokens",
    "check_id",
    "check_memory",
    "check_search",
    "check_subject",
    "mentions",
    "new_id",
    "subject_like",
    "within_budget",
]

MAX_TEXT = 8000
"""Characters of one fact."""
MAX_METADATA_BYTES = 8192
"""Bytes of one fact's metadata as JSON."""
MAX_K = 50


class MemoryStoreError(Exception):
    """A memory operation failed; ``type`` names why, ``retryable`` whether trying again can help."""

    type = "MemoryStoreError"
    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class InvalidMemory(MemoryStoreError):
    type = "InvalidMemory"


class MemoryUnavailable(MemoryStoreError):
    type = "MemoryUnavailable"
    retryable = True


class EmbeddingError(MemoryStoreError):
    type = "EmbeddingError"
    retryable = True


class MemoryNotFound(MemoryStoreError):
    type = "MemoryNotFound"


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """Whose memories: ``agent`` None means every Agent of the namespace (erasure and listing only)."""

    namespace: str
    agent: str | None

    def __post_init__(self) -> None:
        if not self.namespace:
            raise InvalidMemory("a memory scope needs a namespace")

    def __str__(self) -> str:
        return f"{self.namespace}/{self.agent}" if self.agent is not None else f"{self.namespace}/*"

    def one_agent(self) -> str:
        """The Agent of a scope that must name one (saving and searching)."""
        if self.agent is None:
            raise InvalidMemory(f"scope {self}: saving and searching need one Agent")
        return self.agent


class MemoryHit(TypedDict):
    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    """Cosine similarity to the query, -1..1 (higher is closer)."""
    createdAt: float
    """Unix seconds."""
    tokens: int


class MemoryEntry(TypedDict):
    id: str
    namespace: str
    agent: str
    text: str
    metadata: dict[str, Any]
    createdAt: float
    expiresAt: float | None
    embeddingModel: str


def new_id() -> str:
    return str(uuid.uuid4())


def check_id(memory_id: str) -> str:
    try:
        return str(uuid.UUID(memory_id))
    except (ValueError, AttributeError, TypeError):
        raise InvalidMemory(f"{memory_id!r} is not a memory id (a UUID, as save returned it)") from None


def approximate_tokens(text: str) -> int:
    """About four characters a token (what budgets count; the same for every store and model)."""
    return max(1, math.ceil(len(text) / 4))


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 4:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def check_memory(text: Any, metadata: Any) -> tuple[str, dict[str, Any]]:
    """(text, metadata) of a fact to save, or InvalidMemory saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidMemory("a memory needs a non-empty text")
    if len(text) > MAX_TEXT:
        raise InvalidMemory(f"a memory's text is at most {MAX_TEXT} characters (got {len(text)}); save a summary")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping) or not _plain(dict(metadata)):
        raise InvalidMemory("a memory's metadata must be a JSON object of strings, numbers, booleans, lists and "
                            "objects (at most 5 levels)")
    if len(json.dumps(metadata, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidMemory(f"a memory's metadata is at most {MAX_METADATA_BYTES} bytes as JSON")
    return text.strip(), dict(metadata)


def check_search(query: Any, k: Any, token_budget: Any) -> tuple[str, int, int | None]:
    if not isinstance(query, str) or not query.strip():
        raise InvalidMemory("a memory search needs a non-empty query")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidMemory(f"k must be an integer from 1 to {MAX_K} (got {k!r})")
    if token_budget is not None and (isinstance(token_budget, bool) or not isinstance(token_budget, int)
                                     or token_budget < 1):
        raise InvalidMemory(f"token_budget must be a positive integer or none (got {token_budget!r})")
    return query.strip()[:MAX_TEXT], k, token_budget


def within_budget(hits: Iterable[MemoryHit], token_budget: int | None) -> list[MemoryHit]:
    """The hits, best first, that fit ``token_budget`` together (None: all)."""
    if token_budget is None:
        return list(hits)
    out: list[MemoryHit] = []
    used = 0
    for hit in hits:
        if used + hit["tokens"] <= token_budget:
            out.append(hit)
            used += hit["tokens"]
    return out


def _subject_pattern(subject: str) -> re.Pattern[str]:
    words = subject.split()
    if not words or not any(ch.isalnum() for ch in subject):
        raise InvalidMemory("forget by subject needs a subject with a letter or digit in it")
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def check_subject(subject: Any) -> str:
    """``subject`` if erasure by it is possible (a string with a letter or digit), else InvalidMemory."""
    if not isinstance(subject, str):
        raise InvalidMemory("forget by subject needs the subject as a string")
    _subject_pattern(subject)
    return subject


def mentions(subject: str, text: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a fact mentions ``subject`` (whole words, any case, spaces between words any whitespace)."""
    pattern = _subject_pattern(subject)
    return bool(pattern.search(text)) or any(pattern.search(s) for s in _strings(metadata))


def subject_like(subject: str) -> str:
    """A case-insensitive LIKE pattern every fact that mentions ``subject`` matches (a superset: the caller
    filters with :func:`mentions`)."""
    _subject_pattern(subject)
    longest = max(subject.split(), key=len)
    escaped = longest.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
