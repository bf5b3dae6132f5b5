"""Step pods' audit events through the callback server (real aiohttp on loopback, HttpAuditSink), and the
tool_call events the server appends for a posted result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from agentflow.audit.events import rfc3339
from agentflow.audit.records import AuditEvent
from agentflow.callback.server import CallbackServer
from agentflow.runtime.client import AiohttpTransport, CallbackClient, CallbackRefused, HttpAuditSink, RetryPolicy
from agentflow.security.identity import SignedTokens
from agentflow.security.tokens import AttemptClaims, issue_token, new_key
from agentflow.storage import StorageUnavailable
from agentflow.testing import MemoryAuditSink, MemoryStore

NOW = 1_800_000_000.0
CLAIMS = AttemptClaims("uid-1", "team-a", "triage", "classify[2]", 1, NOW + 60)
SUBJECT = "team-a/triage/classify[2]#1"


@dataclass
class Served:
    url: str
    sink: MemoryAuditSink
    store: MemoryStore
    key: bytes
    session: aiohttp.ClientSession

    def auth(self, claims: AttemptClaims = CLAIMS) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.key, claims)}"}

    async def post(self, path: str, body: Any, claims: AttemptClaims = CLAIMS) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body, headers=self.auth(claims)) as r:
            return r.status, await r.json()


async def serve(sink: MemoryAuditSink | None) -> AsyncIterator[Served]:
    store, key = MemoryStore(), new_key()
    server = CallbackServer(store, SignedTokens(key), clock=lambda: NOW, audit=sink, max_audit_body_bytes=4096,
                            max_audit_events=5)
    await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(f"http://127.0.0.1:{server.port}", sink or MemoryAuditSink(), store, key, session)
    finally:
        await server.stop()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in serve(MemoryAuditSink()):
        yield s


def pod_event(**changes: Any) -> dict[str, Any]:
    return {"kind": "redaction", "decision": "flag", "at": "2026-01-02T03:04:05Z", "data": {"entities": 2}, **changes}


async def test_pod_events_get_actor_namespace_and_subject_from_the_token(served: Served) -> None:
    status, body = await served.post("/v1/attempt/audit", {"events": [pod_event(), pod_event(kind="injection")]})
    assert status == 201 and body["appended"] == 2
    # the chain's time is the server's (a pod cannot back-date what it reports); the pod's is kept in podAt
    server_time, pod_time = rfc3339(NOW), "2026-01-02T03:04:05Z"
    assert served.sink.events == [
        AuditEvent("redaction", "step-pod", "team-a", SUBJECT, "flag", server_time, {"entities": 2, "podAt": pod_time}),
        AuditEvent("injection", "step-pod", "team-a", SUBJECT, "flag", server_time, {"entities": 2, "podAt": pod_time}),
    ]


async def test_an_attempt_may_not_flood_the_audit_chain(served: Served) -> None:
    # max_audit_events is 5 per request here; 2000 per attempt by default: 400 requests fill it
    for _ in range(400):
        status, _ = await served.post("/v1/attempt/audit", {"events": [pod_event()] * 5})
        assert status == 201
    status, body = await served.post("/v1/attempt/audit", {"events": [pod_event()]})
    assert status == 429 and "at most 2000 per attempt" in body["error"]
    assert len(served.sink.events) == 2000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "'$'"),
        ({"events": [], "x": 1}, "'x'"),
        ({"events": {}}, "'events'"),
        ({"events": [pod_event()] * 6}, "'events'"),
        ({"events": [pod_event(subject="other/wf/x#0")]}, "'events[0].subject'"),
        ({"events": [pod_event(), pod_event(namespace="other")]}, "'events[1].namespace'"),
        ({"events": [pod_event(kind="approval")]}, "'events[0].kind'"),
        ({"events": [pod_event(kind="model_call")]}, "'events[0].kind'"),
        ({"events": [pod_event(at="yesterday")]}, "'events[0].at'"),
        ({"events": [pod_event(decision="")]}, "'events[0].decision'"),
        ({"events": [pod_event(data=[1])]}, "'events[0].data'"),
        ({"events": [{"kind": "redaction", "at": "2026-01-02T03:04:05Z"}]}, "'events[0].decision'"),
    ],
)
async def test_bad_events_are_400_naming_the_field(served: Served, body: Any, field: str) -> None:
    status, answer = await served.post("/v1/attempt/audit", body)
    assert status == 400 and f"field {field}" in answer["error"], answer
    assert served.sink.events == []


async def test_audit_needs_a_token_and_a_small_body(served: Served) -> None:
    async with served.session.post(served.url + "/v1/attempt/audit", json={"events": []}) as r:
        assert r.status == 401
    big = {"events": [pod_event(data={"x": "y" * 5000})]}
    status, answer = await served.post("/v1/attempt/audit", big)
    assert status == 413 and "send fewer per request" in answer["error"]


async def test_storage_unavailable_is_503(served: Served) -> None:
    served.sink.fail = StorageUnavailable("PostgreSQL is down")
    status, answer = await served.post("/v1/attempt/audit", {"events": [pod_event()]})
    assert status == 503 and "PostgreSQL is down" in answer["error"]


async def test_auditing_off_accepts_and_says_so() -> None:
    async for s in serve(None):
        status, answer = await s.post("/v1/attempt/audit", {"events": [pod_event()]})
        assert status == 200 and answer["appended"] == 0 and "auditing is off" in answer["message"]


def call(kind: str, name: str, response: Any = "ok") -> dict[str, Any]:
    return {"kind": kind, "name": name, "request_hash": "ab" * 32, "response": response, "latency_ms": 12.5}


async def test_tool_calls_of_a_result_are_audited_by_the_server(served: Served) -> None:
    result = {"output": {"x": 1}, "calls": [call("llm", "gpt-x"), call("tool", "http_get", {"secret": "s3"})]}
    status, _ = await served.post("/v1/attempt/result", result)
    assert status == 201
    [e] = served.sink.events
    assert (e.kind, e.actor, e.namespace, e.subject, e.decision) == ("tool_call", "step-pod", "team-a", SUBJECT, "ok")
    assert e.at == "2027-01-15T08:00:00.000000Z"
    assert e.data["tool"] == "http_get" and e.data["runUid"] == "uid-1" and e.data["stepFailed"] is False
    assert len(e.data["responseHash"]) == 64 and "s3" not in str(e.data)  # a hash, never the response


async def test_a_result_is_not_stored_when_its_audit_fails(served: Served) -> None:
    served.sink.fail = StorageUnavailable("down")
    status, _ = await served.post("/v1/attempt/result", {"output": 1, "calls": [call("tool", "t")]})
    assert status == 503 and served.store.results == {}  # the pod retries; the tool call is audited then
    served.sink.fail = None
    status, _ = await served.post("/v1/attempt/result", {"output": 1, "calls": [call("tool", "t")]})
    assert status == 201 and len(served.sink.events) == 1


async def test_http_audit_sink_end_to_end(served: Served) -> None:
    transport = AiohttpTransport()
    client = CallbackClient(served.url, issue_token(served.key, CLAIMS), transport, retry=RetryPolicy(tries=1))
    try:
        events = [AuditEvent("policy_decision", "ignored", "ignored", "ignored", "deny", "2026-01-02T03:04:05Z",
                             {"tool": "shell", "i": i}) for i in range(7)]
        await HttpAuditSink(client, batch=3).append(events)
        assert [e.data["i"] for e in served.sink.events] == list(range(7))
        assert {(e.actor, e.namespace, e.subject) for e in served.sink.events} == {("step-pod", "team-a", SUBJECT)}
        with pytest.raises(CallbackRefused, match=r"events\[0\].kind"):
            await HttpAuditSink(client).append([AuditEvent("approval", "a", "n", "s", "approved",
                                                           "2026-01-02T03:04:05Z")])
    finally:
        await transport.close()
