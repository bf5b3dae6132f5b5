"""The callback server's error handling, with an in-memory store (no PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from agentflow.callback.server import CallbackServer, ResultShapeError, parse_step_result
from agentflow.engine.values import StepError
from agentflow.security.identity import SignedTokens
from agentflow.security.tokens import AttemptClaims, issue_token, new_key
from agentflow.storage import InvalidValue, StorageUnavailable
from agentflow.testing import MemoryStore

NOW = 1_800_000_000.0
CLAIMS = AttemptClaims("uid", "ns", "wf", "a", 1, NOW + 60)


@pytest.fixture
async def served() -> AsyncIterator[tuple[MemoryStore, str, dict[str, str], list[AttemptClaims]]]:
    store, key, notified = MemoryStore(), new_key(), []

    def on_result(claims: AttemptClaims) -> None:  # a plain function works too
        notified.append(claims)
        raise RuntimeError("the hook failed")  # logged; the pod still gets its answer

    server = CallbackServer(store, SignedTokens(key), on_result=on_result, clock=lambda: NOW)
    await server.start("127.0.0.1", 0)
    try:
        yield (
            store,
            f"http://127.0.0.1:{server.port}",
            {"Authorization": f"Bearer {issue_token(key, CLAIMS)}"},
            notified,
        )
    finally:
        await server.stop()
        await server.stop()


async def test_storage_unavailable_is_503_with_retry_after(served: Any) -> None:
    store, url, auth, notified = served
    store.fail = StorageUnavailable("PostgreSQL at db:5432 is unavailable")
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/attempt/result", headers=auth, json={"output": 1}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "5"
        assert "unavailable" in orjson.loads(await r.read())["error"]
    assert notified == []


async def test_a_refused_value_is_422(served: Any) -> None:
    store, url, auth, _ = served
    store.fail = InvalidValue("jsonb cannot hold the character \\u0000")
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/attempt/result", headers=auth, json={"output": 1}) as r:
        assert r.status == 422 and "\\u0000" in orjson.loads(await r.read())["error"]


async def test_a_bug_is_500_without_a_traceback(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    store, url, auth, _ = served
    store.fail = ZeroDivisionError("secret internals")
    async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/attempt", headers=auth) as r:
        text = await r.text()
        assert r.status == 500
        assert "secret internals" not in text and "Traceback" not in text
        assert "operator log" in orjson.loads(text)["error"]
    assert "secret internals" in caplog.text


async def test_a_failing_hook_does_not_fail_the_post(served: Any) -> None:
    store, url, auth, notified = served
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/attempt/result", headers=auth, json={"output": 1}) as r:
        assert r.status == 201
    assert notified == [CLAIMS]
    assert store.results == {("uid", "a", 1): {"output": 1, "error": None, "calls": []}}


async def test_unknown_routes_and_methods_are_json(served: Any) -> None:
    _, url, auth, _ = served
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/nope") as r:
            assert r.status == 404 and "Not Found" in orjson.loads(await r.read())["error"]
        async with s.delete(f"{url}/v1/attempt", headers=auth) as r:
            assert r.status == 405 and "error" in orjson.loads(await r.read())


async def test_server_lifecycle_errors() -> None:
    server = CallbackServer(MemoryStore(), SignedTokens(new_key()))
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    await server.start("127.0.0.1", 0)
    try:
        with pytest.raises(RuntimeError, match="already started"):
            await server.start("127.0.0.1", 0)
        other = CallbackServer(MemoryStore(), SignedTokens(new_key()))
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            await other.start("127.0.0.1", server.port)
    finally:
        await server.stop()


def test_a_short_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        SignedTokens(b"short")


def test_parse_step_result() -> None:
    result = parse_step_result({"output": {"a": 1}})
    assert result.ok and result.output == {"a": 1}
    failed = parse_step_result({"error": {"type": "E", "message": "m", "retryable": False}, "calls": None})
    assert failed.error == StepError("E", "m", False)
    with pytest.raises(ResultShapeError) as info:
        parse_step_result({"output": 1, "calls": [{"kind": "tool", "name": "t", "request_hash": "h"}]})
    assert info.value.field == "calls[0].response"
    with pytest.raises(ResultShapeError, match=r"'calls\[0\]\.cost_usd'"):
        parse_step_result({"output": 1, "calls": [{"kind": "t", "name": "t", "request_hash": "h", "response": 1,
                                                   "cost_usd": True}]})  # fmt: skip
