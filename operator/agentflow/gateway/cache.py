"""The gateway's response cache: exact match, time to live, bounded (least recently used goes first).

The key is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the namespace, the requested model,
the messages, every parameter that changes the answer (sampling, stop, seed, response_format, tools,
tool_choice, max_tokens) and the call's scope: the Agent, its candidate models, the endpoint each is reached
at and the identity of the credential used (a keyed fingerprint, never the key). So tenants never share
answers, and an Agent with an endpoint or key of its own can neither seed nor read answers of another. A step
opts out with ``modelParams.cache: false``; an HTTP client with ``Cache-Control: no-cache`` (do not read) or
``no-store`` (do not read or write). Entries live in this process only (each replica has its own cache).

The clock is passed in (monotonic seconds), so TTL tests need no sleeping.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..llm.chat import ModelResponse, canonical_json

__all__ = ["CacheStats", "ResponseCache", "cache_key"]


def cache_key(
    namespace: str,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    scope: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of a call: hex SHA-256 of the canonical JSON of what determines its answer."""
    body = {"namespace": namespace, "model": model, "messages": [dict(m) for m in messages], "params": dict(params),
            "scope": dict(scope or {})}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    evictions: int
    expirations: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    response: ModelResponse
    expires: float


class ResponseCache:
    """``get`` / ``put`` by key; ``ttl_seconds`` 0 or ``max_entries`` 0 turns it off."""

    def __init__(self, *, ttl_seconds: float = 300.0, max_entries: int = 10_000, clock: Callable[[], float]) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"cache TTL must be >= 0 seconds, got {ttl_seconds}")
        if max_entries < 0:
            raise ValueError(f"cache size must be >= 0 entries, got {max_entries}")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._hits = self._misses = self._evictions = self._expirations = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0 and self.max_entries > 0

    def get(self, key: str) -> ModelResponse | None:
        """The cached response (marked ``cached``, cost 0), or None (a miss is counted)."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self._clock():
            del self._entries[key]
            self._expirations += 1
            entry = None
        if entry is None:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return dataclasses.replace(entry.response, cached=True, cost_usd=0.0, latency_ms=0.0, failed_models=())

    def put(self, key: str, response: ModelResponse) -> None:
        if not self.enabled:
            return
        self._entries[key] = _Entry(response, self._clock() + self.ttl_seconds)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._evictions += 1

    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._entries), self._evictions, self._expirations)
