"""The callback server with a real PostgresStore: tokens, fetching attempts, posting results."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson
import pytest

from agentflow.callback.server import CallbackServer
from agentflow.security.identity import AttemptEnded, SignedTokens
from agentflow.security.tokens import AttemptClaims, issue_token, new_key
from agentflow.storage import PostgresStore
from agentflow.testing import MemoryAuditSink

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0


@dataclass
class Harness:
    store: PostgresStore
    server: CallbackServer
    session: aiohttp.ClientSession
    key: bytes
    claims: AttemptClaims
    notified: list[AttemptClaims] = field(default_factory=list)
    now: list[float] = field(default_factory=lambda: [NOW])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def token(self, **changes: Any) -> str:
        return issue_token(self.key, replace(self.claims, **changes))

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token()}"}


@pytest.fixture
async def harness(store: PostgresStore) -> AsyncIterator[Harness]:
    key = new_key()
    claims = AttemptClaims(f"uid-{uuid.uuid4()}", "team-a", "triage", "classify[2]", 1, NOW + 600)
    notified: list[AttemptClaims] = []
    now = [NOW]

    async def on_result(c: AttemptClaims) -> None:
        notified.append(c)

    server = CallbackServer(store, SignedTokens(key, clock=lambda: now[0]), on_result=on_result, clock=lambda: now[0],
                            max_body_bytes=64 * 2**20)
    await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Harness(store, server, session, key, claims, notified, now)
    finally:
        await server.stop()


async def json_of(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json"
    return orjson.loads(await response.read())


async def test_healthz(harness: Harness) -> None:
    async with harness.session.get(f"{harness.url}/healthz") as r:
        assert r.status == 200 and await json_of(r) == {"ok": True}


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("path", ["/v1/attempt", "/v1/attempt/result"])
async def test_requests_without_a_valid_token_are_401(harness: Harness, path: str) -> None:
    other_key = new_key()
    cases = {
        "missing": ({}, "missing token"),
        "not bearer": ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing token"),
        "malformed": (harness.auth("not-a-token"), "malformed token"),
        "bad signature": (harness.auth(issue_token(other_key, harness.claims)), "bad token signature"),
        "expired": (harness.auth(harness.token(expires=NOW - 1)), "token expired"),
    }
    for name, (headers, message) in cases.items():
        method = harness.session.get if path == "/v1/attempt" else harness.session.post
        async with method(f"{harness.url}{path}", headers=headers, data=b'{"output": 1}') as r:
            body = await json_of(r)
            assert r.status == 401, name
            assert message in body["error"], (name, body)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert await harness.store.get_results(harness.claims.run_uid) == {}
    assert harness.notified == []


async def test_a_token_expires_with_the_clock(harness: Harness) -> None:
    await harness.store.put_attempt(harness.claims.run_uid, harness.claims.node, 1, {"x": 1})
    headers = harness.auth()
    async with harness.session.get(f"{harness.url}/v1/attempt", headers=headers) as r:
        assert r.status == 200
    harness.now[0] = harness.claims.expires
    async with harness.session.get(f"{harness.url}/v1/attempt", headers=headers) as r:
        assert r.status == 401 and "expired" in (await json_of(r))["error"]


# --------------------------------------------------------------------------- fetching the attempt


async def test_fetch_the_attempt_the_token_is_for(harness: Harness) -> None:
    c = harness.claims
    payload = {"request": {"runId": "wf-1", "node": c.node, "attempt": 1, "inputs": {"t": "héllo"}}, "manifests": "x"}
    await harness.store.put_attempt(c.run_uid, c.node, 1, payload)
    await harness.store.put_attempt(c.run_uid, "other", 1, {"secret": "not yours"})

    async with harness.session.get(f"{harness.url}/v1/attempt", headers=harness.auth()) as r:
        assert r.status == 200 and await json_of(r) == payload

    # a token for another attempt of the same node sees only that attempt (which is not stored)
    async with harness.session.get(f"{harness.url}/v1/attempt", headers=harness.auth(harness.token(attempt=2))) as r:
        body = await json_of(r)
        assert r.status == 404
        assert f"attempt 2 of node {c.node!r} of run {c.run_uid!r}" in body["error"]
    async with harness.session.get(f"{harness.url}/v1/attempt", headers=harness.auth(harness.token(run_uid="x"))) as r:
        assert r.status == 404 and "run 'x'" in (await json_of(r))["error"]


# --------------------------------------------------------------------------- posting the result


async def test_post_result_twice_is_201_then_200(harness: Harness) -> None:
    c = harness.claims
    first = {
        "output": {"label": "billing"},
        "error": None,
        "calls": [{"kind": "llm", "name": "gpt-4o-mini", "request_hash": "ab" * 32, "response": "billing",
                   "input_tokens": 120, "output_tokens": 3, "cost_usd": 0.0002}],
    }  # fmt: skip
    async with harness.session.post(f"{harness.url}/v1/attempt/result", headers=harness.auth(), json=first) as r:
        body = await json_of(r)
        assert r.status == 201 and body["stored"] is True
    async with harness.session.post(
        f"{harness.url}/v1/attempt/result", headers=harness.auth(), json={"output": "second"}
    ) as r:
        body = await json_of(r)
        assert r.status == 200 and body["stored"] is False and "already stored" in body["message"]

    assert harness.notified == [c, c]
    stored = (await harness.store.get_results(c.run_uid))[(c.node, c.attempt)]
    assert stored["output"] == {"label": "billing"}
    assert stored["calls"][0]["input_tokens"] == 120 and stored["calls"][0]["cached"] is False  # normalized


async def test_a_failed_step_result(harness: Harness) -> None:
    c = harness.claims
    result = {"error": {"type": "DeadlineExceeded", "message": "too slow"}}
    async with harness.session.post(f"{harness.url}/v1/attempt/result", headers=harness.auth(), json=result) as r:
        assert r.status == 201
    stored = (await harness.store.get_results(c.run_uid))[(c.node, c.attempt)]
    assert stored == {
        "output": None,
        "error": {"type": "DeadlineExceeded", "message": "too slow", "retryable": True},
        "calls": [],
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "'$'"),
        (b'{"outputs": 1}', "'outputs'"),
        (b'{"calls": []}', "'output'"),
        (b'{"output": 1, "error": "boom"}', "'error'"),
        (b'{"error": {"type": 3, "message": "m"}}', "'error.type'"),
        (b'{"error": {"type": "E"}}', "'error.message'"),
        (b'{"output": 1, "calls": {}}', "'calls'"),
        (b'{"output": 1, "calls": [{"kind": "llm", "request_hash": "h", "response": 1}]}', "'calls[0].name'"),
        (b'{"output": 1, "calls": [{"kind": "llm", "name": "m", "request_hash": "h", "response": 1, '
         b'"input_tokens": -3}]}', "'calls[0].input_tokens'"),
        (b'{"output": 1, "calls": [{"kind": "llm", "name": "m", "request_hash": "h", "response": 1, "x": 1}]}',
         "'calls[0].x'"),
        *((b'{"output": 1, "calls": [{"kind": "llm", "name": "m", "request_hash": "h", "response": 1, "tokens": '
           + value + b'}]}', "'calls[0].tokens'") for value in (b'"lots"', b"{}", b"-1000000000", b"1.5", b"true")),
    ],
)  # fmt: skip
async def test_a_bad_body_is_400_naming_the_field(harness: Harness, body: bytes, field: str) -> None:
    async with harness.session.post(f"{harness.url}/v1/attempt/result", headers=harness.auth(), data=body) as r:
        error = (await json_of(r))["error"]
        assert r.status == 400
        assert field in error, error
        assert "Traceback" not in error
    assert await harness.store.get_results(harness.claims.run_uid) == {}
    assert harness.notified == []


async def test_a_token_past_its_ended_attempt_audits_nothing_more(store: PostgresStore) -> None:
    """The attempt ended (its result stored): re-posts are answered, and the tool calls they claim are not audited
    (they would be forged records of calls the stored result does not have)."""
    key = new_key()
    claims = AttemptClaims(f"uid-{uuid.uuid4()}", "team-a", "triage", "fetch", 1, NOW + 600)
    tokens = SignedTokens(key, clock=lambda: NOW)

    async def authenticate(token: str) -> AttemptClaims:
        found = await tokens(token)
        if await store.has_result(found.run_uid, found.node, found.attempt):
            raise AttemptEnded(f"{found.describe()} has ended", found)
        return found

    audit = MemoryAuditSink()
    server = CallbackServer(store, authenticate, clock=lambda: NOW, audit=audit)
    await server.start("127.0.0.1", 0)

    def result(tool: str) -> dict[str, Any]:
        return {"output": 1, "calls": [{"kind": "tool", "name": tool, "request_hash": "h", "response": 1}]}

    try:
        url = f"http://127.0.0.1:{server.port}/v1/attempt/result"
        headers = {"Authorization": f"Bearer {issue_token(key, claims)}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(url, headers=headers, json=result("t1")) as r:
                assert r.status == 201
            for i in range(3):
                async with session.post(url, headers=headers, json=result(f"forged{i}")) as r:
                    assert r.status == 200 and (await json_of(r))["stored"] is False
    finally:
        await server.stop()
    assert [e.data["tool"] for e in audit.events] == ["t1"]
    stored = (await store.get_results(claims.run_uid))[("fetch", 1)]
    assert [c["name"] for c in stored["calls"]] == ["t1"]


async def test_a_20_mb_result(harness: Harness) -> None:
    c = harness.claims
    output = {"report": "y" * (20 * 2**20), "rows": list(range(10_000))}
    body = orjson.dumps({"output": output})
    async with harness.session.post(f"{harness.url}/v1/attempt/result", headers=harness.auth(), data=body) as r:
        assert r.status == 201, await r.text()
    assert (await harness.store.get_results(c.run_uid))[(c.node, c.attempt)]["output"] == output


async def test_a_body_over_the_limit_is_413(store: PostgresStore) -> None:
    key = new_key()
    claims = AttemptClaims("uid-413", "ns", "wf", "a", 1, NOW + 60)
    server = CallbackServer(store, SignedTokens(key), clock=lambda: NOW, max_body_bytes=1024)
    await server.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/v1/attempt/result"
    headers = {"Authorization": f"Bearer {issue_token(key, claims)}"}
    big = orjson.dumps({"output": "z" * 2000})

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server must count as it reads
        for i in range(0, len(big), 100):
            yield big[i : i + 100]

    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, headers=headers, data=big) as r:
                assert r.status == 413 and "1024 bytes" in (await json_of(r))["error"]
            async with session.post(url, headers=headers, data=chunks()) as r:
                assert r.status == 413 and "1024 bytes" in (await json_of(r))["error"]
            async with session.post(url, headers=headers, data=orjson.dumps({"output": "small"})) as r:
                assert r.status == 201
    finally:
        await server.stop()
        await store.delete_run("uid-413")
