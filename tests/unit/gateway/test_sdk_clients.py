"""The gateway as real OpenAI clients see it: the official ``openai`` SDK and LangChain's ``ChatOpenAI`` talk to
the gateway server on loopback, which calls the recording fake upstream (tests/unit/llm/fake_openai.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from agentflow.gateway.endpoints import EndpointPolicy
from agentflow.gateway.server import start_gateway
from agentflow.gateway.service import Attribution, Gateway
from agentflow.llm.litellm_upstream import LiteLLMUpstream
from agentflow.llm.litellm_upstream import load as load_litellm
from agentflow.llm.openai_upstream import ByProvider, OpenAIUpstream
from agentflow.storage.memory_ledger import MemoryLedger

from ..llm.fake_openai import FakeOpenAI, Reply
from .helpers import agent, line, provider, static_budgets, who

TOKEN = "attempt-token"
MODEL = "openai/gpt-4o-mini"
WEATHER = {"type": "function", "function": {"name": "weather", "description": "the weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


@dataclasses.dataclass
class Served:
    url: str
    fake: FakeOpenAI
    ledger: MemoryLedger


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["litellm", "openai-http"])
async def served(fake: FakeOpenAI, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The gateway server with either upstream: litellm, or openai/ models over OpenAIUpstream."""
    ledger = MemoryLedger()
    upstream: Any = LiteLLMUpstream(api_key="sk-test", litellm_module=load_litellm())
    if request.param == "openai-http":
        upstream = ByProvider(OpenAIUpstream(api_key="sk-test", prices=lambda m: (1e-7, 2e-7)), upstream)
    gw = Gateway(ledger=ledger, budgets=static_budgets(line(limit_usd=1.0)), rng=random.Random(0),
                 provider=provider(upstream, prices=lambda m: (1e-7, 2e-7)),
                 endpoints=EndpointPolicy.parse({"endpoints": [{"url": fake.base_url, "environmentKey": True}]}))
    base = who(agent(MODEL))
    assert base.agent is not None
    spec = base.agent.spec.model.model_copy(update={"api_base": fake.base_url})
    attribution = dataclasses.replace(base, agent=base.agent.model_copy(
        update={"spec": base.agent.spec.model_copy(update={"model": spec})}))

    async def auth(token: str) -> Attribution:
        if token != TOKEN:
            raise PermissionError(token)
        return attribution

    server = await start_gateway(gw, auth)
    try:
        yield Served(f"http://127.0.0.1:{server.port}/v1", fake, ledger)
    finally:
        await server.stop()
        if isinstance(upstream, ByProvider):
            await upstream.close()


def sdk(served: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=served.url, api_key=TOKEN, max_retries=0, timeout=20)


async def test_sdk_plain_chat(served: Served) -> None:
    served.fake.script.append(Reply(text="on its way"))
    answer = await sdk(served).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                       temperature=0, seed=7, top_p=0.5, stop=["\n\n"])
    assert answer.choices[0].message.content == "on its way"
    [received] = served.fake.received
    assert {k: received.body.get(k) for k in ("seed", "top_p", "stop", "temperature")} == {
        "seed": 7, "top_p": 0.5, "stop": ["\n\n"], "temperature": 0}


async def test_sdk_json_mode_is_forwarded_and_not_answered_from_a_plain_cache_entry(served: Served) -> None:
    client = sdk(served)
    messages: Any = [{"role": "user", "content": "give me the status"}]
    served.fake.script.extend([Reply(text="it is late"), Reply(text='{"status": "late"}')])
    plain = await client.chat.completions.create(model=MODEL, messages=messages)
    assert plain.choices[0].message.content == "it is late"
    as_json = await client.chat.completions.create(model=MODEL, messages=messages,
                                                   response_format={"type": "json_object"})
    assert json.loads(as_json.choices[0].message.content or "") == {"status": "late"}
    assert [r.body.get("response_format") for r in served.fake.received] == [None, {"type": "json_object"}]


async def test_sdk_tools_round_trip(served: Served) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    served.fake.script.extend([Reply(text=None, tool_calls=[call]), Reply(text="rainy in Oslo")])
    client = sdk(served)
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    first = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                                 tool_choice="auto", parallel_tool_calls=False)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [asked] = choice.message.tool_calls or []
    assert asked.id == "call_1" and asked.function.name == "weather"
    messages += [choice.message, {"role": "tool", "tool_call_id": "call_1", "content": "rain, 8 C"}]
    second = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "rainy in Oslo"
    up_first, up_second = (r.body for r in served.fake.received)
    assert up_first["tools"] == [WEATHER] and up_first["tool_choice"] == "auto"
    assert up_first["parallel_tool_calls"] is False
    assistant = up_second["messages"][1]  # content null (litellm leaves the null out: the same to OpenAI)
    assert assistant["role"] == "assistant" and assistant.get("content") is None and assistant["tool_calls"] == [call]
    assert up_second["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "rain, 8 C"}


async def test_sdk_errors_name_every_unsupported_field(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(served).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=2,
            temperature=5, extra_body={"guided_json": {}})
    error = caught.value
    assert error.status_code == 400 and isinstance(error.body, dict)
    for name in ("logprobs", "top_logprobs", "temperature", "guided_json"):
        assert name in error.body["message"]
    assert error.body["param"] in ("guided_json", "logprobs", "top_logprobs", "temperature")
    assert served.fake.received == []


async def test_sdk_streams_chunks_and_the_budget_is_settled(served: Served) -> None:
    served.fake.script.append(Reply(text="streamed words " * 10, prompt_tokens=30, completion_tokens=40))
    stream = await sdk(served).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True})
    texts, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(texts) == "streamed words " * 10 and finish == "stop"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (30, 40)
    spent = await served.ledger.usage(line(limit_usd=1.0))
    assert spent.reserved_usd == 0 and spent.spent_tokens == 70 and spent.spent_usd > 0
    [logged] = await served.ledger.calls()
    assert logged.status == "ok" and logged.output_tokens == 40


async def test_langchain_chat_openai_invoke_json_mode_and_tools(served: Served) -> None:
    chat = ChatOpenAI(model=MODEL, base_url=served.url, api_key=TOKEN, max_retries=0, timeout=20,
                      temperature=0)
    served.fake.script.append(Reply(text="hello from langchain"))
    answer = await chat.ainvoke([HumanMessage("hi")])
    assert answer.content == "hello from langchain"

    served.fake.script.append(Reply(text='{"ok": true}'))
    as_json = await chat.bind(response_format={"type": "json_object"}).ainvoke([HumanMessage("hi")])
    assert json.loads(str(as_json.content)) == {"ok": True}
    assert served.fake.received[-1].body["response_format"] == {"type": "json_object"}

    call = {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}
    served.fake.script.extend([Reply(text=None, tool_calls=[call]), Reply(text="sunny")])
    tooled = chat.bind_tools([WEATHER])
    asked = await tooled.ainvoke([HumanMessage("weather in Rome?")])
    assert isinstance(asked, AIMessage) and asked.tool_calls[0]["args"] == {"city": "Rome"}
    final = await tooled.ainvoke([HumanMessage("weather in Rome?"), asked,
                                  ToolMessage("sun, 25 C", tool_call_id="call_9")])
    assert final.content == "sunny"
    sent = served.fake.received[-1].body["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == "call_9"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_9", "content": "sun, 25 C"}


async def test_langchain_chat_openai_streams(served: Served) -> None:
    chat = ChatOpenAI(model=MODEL, base_url=served.url, api_key=TOKEN, max_retries=0, timeout=20,
                      stream_usage=True)
    served.fake.script.append(Reply(text="one two three " * 8, prompt_tokens=9, completion_tokens=24))
    pieces = [piece async for piece in chat.astream([HumanMessage("count")])]
    assert "".join(str(p.content) for p in pieces) == "one two three " * 8
    usage = [p.usage_metadata for p in pieces if p.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == 24
    assert (await served.ledger.usage(line(limit_usd=1.0))).reserved_usd == 0


@pytest.mark.parametrize(("data", "param", "says"), [
    (b"{not json", None, "the body is not JSON"),
    (b"", None, "the body is not JSON"),
    (b"\xff\xfe", None, "the body is not JSON"),
    (b"[" * 5000 + b"]" * 5000, None, "depth limit"),
    (b'"a string"', None, "must be a JSON object"),
    (b'{"model": 3, "messages": "hi"}', "model", "messages: must be a non-empty list"),
    (b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9",'
     b' "stop": [1], "seed": 1.5, "tools": {}, "response_format": "json", "parallel_tool_calls": "yes"}',
     "max_tokens", "parallel_tool_calls: must be true or false"),
    (b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "assistant", "content": null}]}',
     "messages[0].content", "null only on an assistant message with tool_calls"),
    (b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "tool_choice":'
     b' {"type": "function", "function": {"name": "nope"}}, "tools": []}', "tool_choice.function.name", "nope"),
])
async def test_bad_bodies_are_400s_naming_the_field(served: Served, data: bytes, param: str | None,
                                                    says: str) -> None:
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            f"{served.url}/chat/completions", data=data,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["param"] == param and says in error["message"]
    if param is not None:
        assert param in error["message"]
    assert served.fake.received == []


async def test_a_huge_body_is_a_413_naming_the_limit_and_nothing_hangs(served: Served) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (9 * 2**20)}]}
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(served).chat.completions.create(**body)
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict) and "limit of 8388608 bytes" in caught.value.body["message"]
    assert served.fake.received == []


async def test_an_earlier_refusal_is_sent_back_to_the_provider(served: Served) -> None:
    messages: Any = [{"role": "user", "content": "do the bad thing"},
                     {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                     {"role": "user", "content": "then the good thing"}]
    with pytest.raises(openai.BadRequestError):  # content null needs tool_calls
        await sdk(served).chat.completions.create(model=MODEL, messages=messages)
    messages[1]["content"] = ""
    await sdk(served).chat.completions.create(model=MODEL, messages=messages)
    assert served.fake.received[0].body["messages"][1]["refusal"] == "I can't help with that."


async def wait_until_settled(ledger: MemoryLedger) -> Any:
    for _ in range(100):
        usage = await ledger.usage(line(limit_usd=1.0))
        if usage.reserved_usd == 0 and await ledger.calls():
            return usage
        await asyncio.sleep(0.05)
    raise AssertionError("the stream's reservation was never settled")


async def test_a_stream_is_the_providers_stream_and_a_streamed_answer_is_cached(served: Served) -> None:
    served.fake.script.append(Reply(text="abcdefgh" * 6, piece=8, prompt_tokens=5, completion_tokens=12))
    client = sdk(served)
    messages: Any = [{"role": "user", "content": "letters"}]
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, stream=True)
    assert raw.headers["x-agentflow-cache"] == "miss" and "x-agentflow-cost-usd" not in raw.headers
    pieces = [c.choices[0].delta.content async for c in raw.parse() if c.choices and c.choices[0].delta.content]
    assert pieces == ["abcdefgh"] * 6  # the provider's own pieces, as they came
    assert served.fake.received[0].body["stream"] is True
    assert served.fake.received[0].body["stream_options"] == {"include_usage": True}
    [logged] = await served.ledger.calls()
    assert (logged.input_tokens, logged.output_tokens, logged.status) == (5, 12, "ok")
    again = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, stream=True)
    assert again.headers["x-agentflow-cache"] == "hit" and float(again.headers["x-agentflow-cost-usd"]) == 0
    text = "".join([c.choices[0].delta.content or "" async for c in again.parse() if c.choices])
    assert text == "abcdefgh" * 6 and len(served.fake.received) == 1


async def test_streamed_tool_calls_reach_the_sdk(served: Served) -> None:
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "weather", "arguments": f'{{"city": "{c}"}}'}}
             for i, c in enumerate(("Oslo", "Rome"))]
    served.fake.script.append(Reply(text=None, tool_calls=calls))
    stream = await sdk(served).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], stream=True)
    got: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = got.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
    assert finish == "tool_calls"
    assert [got[i] for i in sorted(got)] == [
        {"id": c["id"], "name": "weather", "arguments": c["function"]["arguments"]} for c in calls]


async def test_a_stream_falls_back_before_its_first_piece(served: Served, fake: FakeOpenAI) -> None:
    # The Agent in this module has one model; a 503 before the first piece is an error status, not a stream.
    fake.script.append(Reply(status=503))
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(served).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                  stream=True)
    assert caught.value.status_code == 502
    usage = await served.ledger.usage(line(limit_usd=1.0))
    assert usage.reserved_usd == 0 and usage.spent_usd == 0


async def test_a_client_leaving_mid_stream_settles_what_was_streamed(served: Served) -> None:
    served.fake.script.append(Reply(text="word " * 200, piece=5, delay=0.02, completion_tokens=200))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "talk a lot"}], "stream": True}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        response = await session.post(f"{served.url}/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200
        for _ in range(3):
            await response.content.readline()
        response.close()  # the client goes away after a few pieces
    usage = await wait_until_settled(served.ledger)
    [logged] = await served.ledger.calls()
    assert logged.status == "ClientDisconnected" and logged.routing["tried"][0]["error"] == "ClientDisconnected"
    assert 0 < logged.output_tokens < 200 and usage.spent_tokens == logged.input_tokens + logged.output_tokens
    assert usage.spent_usd > 0
    for _ in range(100):  # the provider's stream was closed, not read to its end
        if served.fake.aborted:
            break
        await asyncio.sleep(0.05)
    assert served.fake.aborted and served.fake.aborted[0] < 200 and served.fake.streamed == []


async def test_a_provider_failing_mid_stream_is_an_error_event_and_what_was_streamed_is_settled(
        served: Served) -> None:
    served.fake.script.append(Reply(text="word " * 20, piece=5, fail_after=4))
    stream = await sdk(served).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                       stream=True)
    texts = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "word " * 3 and "model 'openai/gpt-4o-mini'" in caught.value.message
    usage = await wait_until_settled(served.ledger)
    [logged] = await served.ledger.calls()
    assert logged.status in ("ProviderUnavailable", "ModelConnectionError") and logged.output_tokens == 4
    assert usage.spent_usd == pytest.approx(logged.cost_usd) and logged.cost_usd > 0
