"""OpenAIUpstream (aiohttp, no litellm) against the recording OpenAI-compatible server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow.llm import ChatRequest, Endpoint, ModelError, ModelResponse
from agentflow.llm.chat import StreamDelta
from agentflow.llm.openai_upstream import OPENAI_BASE, PLACEHOLDER_KEY, ByProvider, OpenAIUpstream

from .fake_openai import FakeOpenAI, Reply

MESSAGES = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"})


def request(model: str = "openai/fake-model", **kw: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=MESSAGES, idempotency_key="run-1/classify/1", **kw)


@pytest.fixture
async def upstream() -> AsyncIterator[OpenAIUpstream]:
    client = OpenAIUpstream(prices=lambda model: (1e-6, 2e-6))
    try:
        yield client
    finally:
        await client.close()


async def test_sends_the_body_as_given_and_reads_the_answer(fake_openai: FakeOpenAI, upstream: OpenAIUpstream) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}
    answer = await upstream.complete(request(temperature=0.3, max_tokens=64, top_p=0.5, seed=7, stop=("END",),
                                             response_format=fmt), Endpoint(fake_openai.base_url, "sk-test"))
    assert (answer.text, answer.model, answer.input_tokens, answer.output_tokens) == (
        "hello from the fake server", "openai/fake-model", 11, 7)
    assert answer.cost_usd == pytest.approx(11e-6 + 14e-6)
    [got] = fake_openai.received
    assert got.body == {"model": "fake-model", "messages": [dict(m) for m in MESSAGES], "temperature": 0.3,
                        "top_p": 0.5, "max_tokens": 64, "stop": ["END"], "seed": 7, "response_format": fmt}
    assert got.headers["authorization"] == "Bearer sk-test" and got.headers["idempotency-key"] == "run-1/classify/1"


@pytest.mark.parametrize(("usage", "counted"), [
    (None, True), ({"prompt_tokens": 0, "completion_tokens": 0}, True), ({"prompt_tokens": -5, "completion_tokens": 1},
                                                                         False),
    ({"prompt_tokens": "9", "completion_tokens": 1}, False), ({"prompt_tokens": 10**12, "completion_tokens": 1}, False),
], ids=["none", "zeros", "negative", "string", "absurd"])
async def test_usage_missing_is_counted_and_usage_that_is_not_a_count_is_refused(
        fake_openai: FakeOpenAI, upstream: OpenAIUpstream, usage: Any, counted: bool) -> None:
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "created": 1, "model": "fake-model", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "y" * 40}, "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = usage
    fake_openai.script.append(Reply(raw=body))
    if counted:
        answer = await upstream.complete(request(), Endpoint(fake_openai.base_url, "sk-test"))
        assert answer.input_tokens > 0 and answer.output_tokens == 10 and answer.cost_usd > 0
        return
    with pytest.raises(ModelError) as caught:
        await upstream.complete(request(), Endpoint(fake_openai.base_url, "sk-test"))
    assert caught.value.type == "BadModelResponse" and not caught.value.retryable and "usage.prompt_tokens" in str(
        caught.value)


async def test_tool_calls_come_back(fake_openai: FakeOpenAI, upstream: OpenAIUpstream) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 3}'}}
    fake_openai.script.append(Reply(text=None, tool_calls=[call]))  # type: ignore[arg-type]
    tools = ({"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},)
    answer = await upstream.complete(request(tools=tools, tool_choice="auto", parallel_tool_calls=False),
                                     Endpoint(fake_openai.base_url, "sk"))
    assert answer.text == "" and answer.tool_calls == (call,) and answer.finish_reason == "tool_calls"
    assert fake_openai.received[0].body["parallel_tool_calls"] is False


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (400, "BadModelRequest", False), (401, "AuthenticationFailed", False), (429, "RateLimited", True),
    (503, "ProviderUnavailable", True)])
async def test_http_errors_become_model_errors(fake_openai: FakeOpenAI, upstream: OpenAIUpstream, status: int,
                                               kind: str, retryable: bool) -> None:
    fake_openai.script.append(Reply(status=status))
    with pytest.raises(ModelError) as caught:
        await upstream.complete(request(), Endpoint(fake_openai.base_url, "sk"))
    assert (caught.value.type, caught.value.retryable) == (kind, retryable)
    assert f"scripted {status}" in caught.value.message


async def test_a_refused_connection_is_retryable(upstream: OpenAIUpstream) -> None:
    closed = FakeOpenAI()
    closed.stop_unstarted()
    with pytest.raises(ModelError) as caught:
        await upstream.complete(request(), Endpoint(closed.base_url, "sk"))
    assert caught.value.type == "ModelConnectionError" and caught.value.retryable


async def test_streams_pieces_then_the_answer(fake_openai: FakeOpenAI, upstream: OpenAIUpstream) -> None:
    fake_openai.script.append(Reply(text="abcdefgh" * 3, piece=8, prompt_tokens=4, completion_tokens=6))
    items = [i async for i in upstream.stream(request(), Endpoint(fake_openai.base_url, "sk"))]
    assert items[:-1] == [StreamDelta("abcdefgh")] * 3
    last = items[-1]
    assert isinstance(last, ModelResponse) and (last.text, last.input_tokens, last.output_tokens) == (
        "abcdefgh" * 3, 4, 6)
    assert fake_openai.received[0].body["stream_options"] == {"include_usage": True}


async def test_a_stream_cut_before_its_end_is_a_retryable_error(fake_openai: FakeOpenAI,
                                                                upstream: OpenAIUpstream) -> None:
    fake_openai.script.append(Reply(text="abcdefgh" * 3, piece=8, fail_after=2))
    seen = []
    with pytest.raises(ModelError) as caught:
        async for item in upstream.stream(request(), Endpoint(fake_openai.base_url, "sk")):
            seen.append(item)
    assert len(seen) == 1 and caught.value.retryable


def test_keys_go_only_where_the_endpoint_policy_allows() -> None:
    client = OpenAIUpstream(api_key="sk-platform")
    assert client.target(Endpoint("http://vllm:8000/v1/", None)) == ("http://vllm:8000/v1", PLACEHOLDER_KEY)
    assert client.target(Endpoint("http://vllm:8000/v1", None, environment_key=True)) == (
        "http://vllm:8000/v1", "sk-platform")
    assert client.target(Endpoint("http://vllm:8000/v1", "sk-agent")) == ("http://vllm:8000/v1", "sk-agent")
    assert client.target(Endpoint(None, None)) == (OPENAI_BASE, PLACEHOLDER_KEY)
    assert client.target(Endpoint(None, None, environment_key=True)) == (OPENAI_BASE, "sk-platform")
    with_base = OpenAIUpstream(api_base="http://local/v1", api_key="sk-local")
    assert with_base.target(Endpoint(None, None)) == ("http://local/v1", "sk-local")
    # No platform key given: OPENAI_API_KEY goes exactly where litellm would read it from the environment.
    env = OpenAIUpstream(environment_key="sk-env")
    assert env.target(Endpoint(None, None, environment_key=True)) == (OPENAI_BASE, "sk-env")
    assert env.target(Endpoint("http://vllm/v1", None, environment_key=True)) == ("http://vllm/v1", "sk-env")
    assert env.target(Endpoint("http://vllm/v1", None)) == ("http://vllm/v1", PLACEHOLDER_KEY)
    assert env.target(Endpoint(None, None)) == (OPENAI_BASE, PLACEHOLDER_KEY)
    assert OpenAIUpstream(api_base="http://local/v1", environment_key="sk-env").target(Endpoint(None, None)) == (
        "http://local/v1", PLACEHOLDER_KEY)


class Other:
    def __init__(self) -> None:
        self.models: list[str] = []

    async def complete(self, request: ChatRequest, endpoint: Endpoint) -> ModelResponse:
        self.models.append(request.model)
        return ModelResponse(text="from litellm", model=request.model)

    async def embed(self, model: str, texts: Any, endpoint: Endpoint, timeout: float | None) -> tuple[Any, int]:
        return [[1.0] for _ in texts], 3


async def test_by_provider_sends_openai_models_over_http_and_the_rest_to_litellm(
        fake_openai: FakeOpenAI, upstream: OpenAIUpstream) -> None:
    other = Other()
    routed = ByProvider(upstream, other)
    at = Endpoint(fake_openai.base_url, "sk")
    assert (await routed.complete(request("openai/gpt-4o-mini"), at)).text == "hello from the fake server"
    assert (await routed.complete(request("anthropic/claude-3-5-haiku"), at)).text == "from litellm"
    streamed = [i async for i in routed.stream(request("anthropic/claude-3-5-haiku"), at)]
    assert [type(i) for i in streamed] == [ModelResponse]  # an upstream that cannot stream: answered whole
    assert other.models == ["anthropic/claude-3-5-haiku"] * 2
    assert [r.body["model"] for r in fake_openai.received] == ["gpt-4o-mini"]
    assert await routed.embed("openai/text-embedding-3-small", ["a"], at) == ([[1.0]], 3)  # litellm embeds
