from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from agentflow.gateway.endpoints import EndpointPolicy
from agentflow.gateway.openai import RequestError, parse_chat_request
from agentflow.gateway.server import AuthError, GatewayServer, start_gateway
from agentflow.gateway.service import Attribution, Gateway
from agentflow.llm.litellm_upstream import LiteLLMUpstream
from agentflow.llm.litellm_upstream import load as load_litellm
from agentflow.storage.memory_ledger import MemoryLedger

from ..llm.fake_openai import FakeOpenAI, Reply
from .helpers import agent, line, provider, static_budgets, who

TOKEN = "attempt-token"
MSGS = [{"role": "user", "content": "my order is late"}]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


async def authenticate(token: str) -> Attribution:
    if token != TOKEN:
        raise AuthError("bad token signature: it was not issued by this operator")
    return who(agent("openai/gpt-4o-mini", ("openai/gpt-4o",)))


@pytest.fixture
async def gateway_url(fake: FakeOpenAI) -> AsyncIterator[str]:
    upstream = LiteLLMUpstream(api_key="sk-test", litellm_module=load_litellm())
    gw = Gateway(ledger=MemoryLedger(), budgets=static_budgets(line(limit_usd=0.01)), rng=random.Random(0),
                 provider=provider(upstream, prices=lambda m: (1e-7, 2e-7) if m.startswith("openai/") else None),
                 endpoints=EndpointPolicy.parse({"endpoints": [{"url": fake.base_url, "environmentKey": True}]}))

    async def auth(token: str) -> Attribution:
        base = await authenticate(token)
        assert base.agent is not None
        spec = base.agent.spec.model.model_copy(update={"api_base": fake.base_url})
        routed = base.agent.model_copy(update={"spec": base.agent.spec.model_copy(update={"model": spec})})
        return dataclasses.replace(base, agent=routed)

    server = await start_gateway(gw, auth)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def post(url: str, body: Any, token: str | None = TOKEN, **headers: str) -> tuple[int, dict[str, Any], Any]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat/completions", json=body,
                                                                headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


async def test_openai_shaped_answer_with_cost_cache_and_model_headers(gateway_url: str, fake: FakeOpenAI) -> None:
    fake.script.append(Reply(text="it is on its way", prompt_tokens=20, completion_tokens=5))
    status, headers, body = await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS,
                                                     "temperature": 0}, **{"Idempotency-Key": "run/n/1"})
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "openai/gpt-4o-mini"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "it is on its way"},
                                "finish_reason": "stop", "logprobs": None}]
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    assert headers["x-agentflow-cache"] == "miss" and headers["x-agentflow-model"] == "openai/gpt-4o-mini"
    assert float(headers["x-agentflow-cost-usd"]) > 0
    [received] = fake.received
    assert received.body["messages"] == MSGS and received.headers["authorization"] == "Bearer sk-test"
    assert received.headers.get("idempotency-key") == "run/n/1"
    status, headers, again = await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS,
                                                      "temperature": 0})
    assert status == 200 and headers["x-agentflow-cache"] == "hit" and float(headers["x-agentflow-cost-usd"]) == 0
    assert again["choices"][0]["message"]["content"] == "it is on its way" and len(fake.received) == 1
    status, headers, _ = await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS,
                                                  "temperature": 0}, **{"Cache-Control": "no-cache"})
    assert status == 200 and headers["x-agentflow-cache"] == "bypass" and len(fake.received) == 2


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": MSGS}, "model"),
    ({"model": "openai/gpt-4o-mini"}, "messages"),
    ({"model": "openai/gpt-4o-mini", "messages": []}, "messages"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0]"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "tool_choice": "required"}, "tool_choice"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "temperature": 3}, "temperature"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "max_tokens": 0}, "max_tokens"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "stream": "yes"}, "stream"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "n": 2}, "n"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "tools": [{"type": "function"}]}, "tools[0]"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "logit_bias": {}}, "logit_bias"),
    ({"model": "openai/gpt-4o-mini", "messages": MSGS, "response_format": {"type": "xml"}}, "response_format.type"),
    ({"model": "openai/gpt-4o", "messages": MSGS}, None),  # allowed by the Agent: not a validation error
    ({"model": "anthropic/claude-3", "messages": MSGS}, "model"),  # not the Agent's
])
async def test_validation_errors_name_the_field(gateway_url: str, fake: FakeOpenAI, body: dict[str, Any],
                                                param: str | None) -> None:
    status, _, answer = await post(gateway_url, body)
    if param is None:
        assert status == 200
        return
    assert status == 400, answer
    assert answer["error"]["param"] == param and param in answer["error"]["message"]
    assert fake.received == []


async def test_several_unsupported_fields_are_named_together(gateway_url: str, fake: FakeOpenAI) -> None:
    status, _, answer = await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS,
                                                 "logit_bias": {}, "functions": [], "temperature": 9})
    assert status == 400 and answer["error"]["param"] == "functions"
    for name in ("functions", "logit_bias", "temperature"):
        assert name in answer["error"]["message"]
    assert fake.received == []


async def test_stream_sends_chunks_then_done(gateway_url: str, fake: FakeOpenAI) -> None:
    fake.script.append(Reply(text="streamed " * 20, prompt_tokens=20, completion_tokens=40))
    body = {"model": "openai/gpt-4o-mini", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as session, session.post(
            f"{gateway_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = [line[len("data: "):] for line in raw.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import json

    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "streamed " * 20
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


async def test_auth_refusals(gateway_url: str, fake: FakeOpenAI) -> None:
    body = {"model": "openai/gpt-4o-mini", "messages": MSGS}
    status, headers, answer = await post(gateway_url, body, token=None)
    assert status == 401 and "Bearer" in answer["error"]["message"] and "WWW-Authenticate" in headers
    status, _, answer = await post(gateway_url, body, token="forged")
    assert status == 401 and "signature" in answer["error"]["message"]
    assert fake.received == []


async def test_budget_exceeded_is_a_402_that_is_not_retryable(gateway_url: str, fake: FakeOpenAI) -> None:
    # $0.01 at $2e-7 per output token fits 1024 default tokens (~$0.0002) many times; ask for a huge max.
    status, _, answer = await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS,
                                                 "max_tokens": 100_000})
    assert status == 402
    assert answer["error"]["type"] == "BudgetExceeded" and answer["error"]["retryable"] is False
    assert "Budget team-a/team (hard) is exhausted" in answer["error"]["message"]
    assert fake.received == []


async def test_upstream_failure_is_a_retryable_502(gateway_url: str, fake: FakeOpenAI) -> None:
    fake.script.extend([Reply(status=503), Reply(status=503)])
    status, headers, answer = await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS})
    assert status == 502 and answer["error"]["retryable"] is True and headers["Retry-After"] == "5"
    assert [r.body["model"] for r in fake.received] == ["gpt-4o-mini", "gpt-4o"]  # fell back to the next


async def test_models_health_and_no_metrics_on_the_api(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway_url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            models = await r.json()
        assert [m["id"] for m in models["data"]] == ["openai/gpt-4o-mini", "openai/gpt-4o"]
        async with session.get(f"{gateway_url}/v1/models") as r:
            assert r.status == 401
        async with session.get(f"{gateway_url}/healthz") as r:
            assert await r.json() == {"ok": True}
        await post(gateway_url, {"model": "openai/gpt-4o-mini", "messages": MSGS})
        # Metrics have a listener of their own (`agentflow gateway --metrics-listen`), not the API's port.
        async with session.get(f"{gateway_url}/metrics") as r:
            assert r.status == 404
        async with session.get(f"{gateway_url}/nowhere") as r:
            assert r.status == 404 and (await r.json())["error"]["type"] == "NotFound"


def test_parse_reads_cache_control_timeout_and_json_schema() -> None:
    schema = {"type": "object"}
    request = parse_chat_request(
        {"model": "m", "messages": MSGS, "max_completion_tokens": 7,
         "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
        {"Cache-Control": "no-store", "X-AgentFlow-Timeout-Seconds": "12.5"},
    ).chat
    assert request.max_tokens == 7 and request.output_schema == schema and request.timeout_seconds == 12.5
    assert not request.read_cache and not request.write_cache
    with pytest.raises(RequestError) as caught:
        parse_chat_request({"model": "m", "messages": MSGS}, {"X-AgentFlow-Timeout-Seconds": "soon"})
    assert caught.value.param == "X-AgentFlow-Timeout-Seconds"


async def test_server_refuses_a_second_start_and_a_busy_port() -> None:
    gw = Gateway(ledger=MemoryLedger())
    server = GatewayServer(gw, authenticate)
    await server.start("127.0.0.1", 0)
    try:
        with pytest.raises(RuntimeError, match="already started"):
            await server.start("127.0.0.1", 0)
        other = GatewayServer(gw, authenticate)
        with pytest.raises(OSError, match="cannot listen"):
            await other.start("127.0.0.1", server.port)
    finally:
        await server.stop()
