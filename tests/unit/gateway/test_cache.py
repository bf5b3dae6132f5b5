from __future__ import annotations

import pytest

from agentflow.gateway.cache import ResponseCache, cache_key
from agentflow.llm import ModelResponse

MSGS = ({"role": "user", "content": "hi"},)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(text: str = "a") -> ModelResponse:
    return ModelResponse(text=text, model="m", input_tokens=3, output_tokens=2, cost_usd=0.5, latency_ms=80.0)


def test_key_is_exact_on_namespace_model_messages_and_params() -> None:
    base = cache_key("ns", "m", MSGS, {"temperature": 0.0})
    assert base == cache_key("ns", "m", [{"content": "hi", "role": "user"}], {"temperature": 0.0})
    assert base != cache_key("other", "m", MSGS, {"temperature": 0.0})
    assert base != cache_key("ns", "m2", MSGS, {"temperature": 0.0})
    assert base != cache_key("ns", "m", ({"role": "user", "content": "hi!"},), {"temperature": 0.0})
    assert base != cache_key("ns", "m", MSGS, {"temperature": 0.1})


def test_hit_is_free_and_marked_cached_until_the_ttl() -> None:
    clock = Clock()
    cache = ResponseCache(ttl_seconds=10, max_entries=5, clock=clock)
    assert cache.get("k") is None
    cache.put("k", answer())
    hit = cache.get("k")
    assert hit is not None and hit.cached and hit.cost_usd == 0.0 and hit.text == "a" and hit.input_tokens == 3
    clock.now += 9.9
    assert cache.get("k") is not None
    clock.now += 0.2
    assert cache.get("k") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.entries) == (2, 2, 1, 0)
    assert stats.hit_rate == 0.5


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = ResponseCache(ttl_seconds=10, max_entries=2, clock=Clock())
    cache.put("a", answer("a"))
    cache.put("b", answer("b"))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", answer("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.stats().evictions == 1


def test_zero_ttl_or_size_turns_it_off_and_negative_values_are_refused() -> None:
    off = ResponseCache(ttl_seconds=0, max_entries=10, clock=Clock())
    off.put("k", answer())
    assert not off.enabled and off.get("k") is None
    with pytest.raises(ValueError, match="TTL"):
        ResponseCache(ttl_seconds=-1, clock=Clock())
    with pytest.raises(ValueError, match="size"):
        ResponseCache(max_entries=-1, clock=Clock())
