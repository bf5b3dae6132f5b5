"""Gateway.stream without HTTP: fallback before the first piece, and one settlement however a stream ends."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from agentflow.gateway.service import Gateway, GatewayError
from agentflow.gateway.streaming import CLIENT_DISCONNECTED, GatewayStream
from agentflow.llm import ChatRequest, ModelError
from agentflow.storage.memory_ledger import MemoryLedger

from .helpers import Scripted, ScriptedStream, agent, failure, line, provider, static_budgets, who

MSGS = ({"role": "user", "content": "my order is late"},)
BUDGET = line(limit_usd=1.0)


def gateway(upstream: Scripted, ledger: MemoryLedger, **kwargs: Any) -> Gateway:
    return Gateway(ledger=ledger, provider=provider(upstream, prices=lambda model: (1e-6, 2e-6)),
                   budgets=static_budgets(BUDGET), rng=random.Random(0), **kwargs)


def chat(model: str = "openai/gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model=model, messages=MSGS)


async def read(stream: GatewayStream) -> str:
    try:
        return "".join([piece.content async for piece in stream.pieces()])
    finally:
        await stream.aclose()


async def test_a_stream_read_to_its_end_is_settled_with_the_providers_usage_and_cached() -> None:
    ledger = MemoryLedger()
    gw = gateway(ScriptedStream(cost_usd=0.002), ledger)
    stream = await gw.stream(who(), chat())
    assert (stream.cache, stream.model, stream.result) == ("miss", "openai/gpt-4o-mini", None)
    assert await read(stream) == "answer from openai/gpt-4o-mini"
    assert stream.result is not None and stream.result.response.output_tokens == 5
    usage = await ledger.usage(BUDGET)
    assert (usage.spent_usd, usage.spent_tokens, usage.reserved_usd) == (pytest.approx(0.002), 15, 0)
    again = await gw.stream(who(), chat())
    assert again.cache == "hit" and await read(again) == "answer from openai/gpt-4o-mini"


async def test_a_stream_falls_back_before_its_first_piece_only() -> None:
    ledger = MemoryLedger()
    upstream = ScriptedStream()
    upstream.script.append(failure("openai/gpt-4o-mini"))
    gw = gateway(upstream, ledger)
    fallbacks = who(agent("openai/gpt-4o-mini", ("openai/gpt-4o",)))
    stream = await gw.stream(fallbacks, chat())
    assert stream.model == "openai/gpt-4o" and await read(stream) == "answer from openai/gpt-4o"
    assert stream.result is not None and stream.result.response.failed_models == ("openai/gpt-4o-mini",)

    upstream.fail_at = (1, failure("openai/gpt-4o-mini"))  # mid-stream: no fallback, the error is raised
    with pytest.raises(ModelError) as caught:
        await read(await gw.stream(who(agent("openai/gpt-4o-mini", ("openai/gpt-4o",)), node="other"),
                                   ChatRequest(model="openai/gpt-4o-mini", messages=MSGS, seed=1)))
    assert caught.value.type == "ProviderUnavailable"
    calls = await ledger.calls()
    assert calls[-1].status == "ProviderUnavailable" and calls[-1].model_used == "openai/gpt-4o-mini"
    assert [r.model for r in upstream.received[-1:]] == ["openai/gpt-4o-mini"]
    assert (await ledger.usage(BUDGET)).reserved_usd == 0


async def test_every_candidate_failing_before_a_piece_is_a_gateway_error_and_nothing_is_reserved() -> None:
    ledger = MemoryLedger()
    upstream = ScriptedStream()
    upstream.script.extend([failure("openai/gpt-4o-mini"), failure("openai/gpt-4o")])
    with pytest.raises(GatewayError) as caught:
        await gateway(upstream, ledger).stream(who(agent("openai/gpt-4o-mini", ("openai/gpt-4o",))), chat())
    assert caught.value.status == 502 and "every model failed" in caught.value.message
    usage = await ledger.usage(BUDGET)
    assert usage.reserved_usd == 0 and usage.spent_usd == 0


async def test_budget_exceeded_refuses_a_stream_before_the_provider() -> None:
    upstream = ScriptedStream()
    gw = Gateway(ledger=MemoryLedger(), provider=provider(upstream, prices=lambda model: (1e-6, 2e-6)),
                 budgets=static_budgets(line(limit_usd=0.0001)))
    with pytest.raises(GatewayError) as caught:
        await gw.stream(who(), chat())
    assert caught.value.type == "BudgetExceeded" and upstream.received == []


async def test_a_stream_closed_early_closes_the_provider_and_settles_what_was_streamed() -> None:
    ledger = MemoryLedger()
    upstream = ScriptedStream(pieces=4, gate=asyncio.Event())
    stream = await gateway(upstream, ledger).stream(who(), chat())
    pieces = stream.pieces()
    assert (await anext(pieces)).content
    await stream.aclose()  # the client went away after one piece
    await stream.aclose()  # idempotent
    assert upstream.closed == ["openai/gpt-4o-mini"]
    usage = await ledger.usage(BUDGET)
    [call] = await ledger.calls()
    assert call.status == CLIENT_DISCONNECTED and call.output_tokens == 2 and call.input_tokens > 0
    assert usage.reserved_usd == 0 and usage.spent_usd == pytest.approx(call.cost_usd) and call.cost_usd > 0


async def test_a_stream_cancelled_while_waiting_for_a_piece_settles_in_aclose() -> None:
    ledger = MemoryLedger()
    upstream = ScriptedStream(pieces=4, gate=asyncio.Event())
    stream = await gateway(upstream, ledger).stream(who(), chat())

    async def consume() -> None:
        try:
            async for _ in stream.pieces():
                pass
        finally:
            await asyncio.shield(stream.aclose())

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)  # it waits for the second piece
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [call] = await ledger.calls()
    assert call.status == CLIENT_DISCONNECTED and (await ledger.usage(BUDGET)).reserved_usd == 0


async def test_an_upstream_that_cannot_stream_is_answered_whole() -> None:
    ledger = MemoryLedger()
    stream = await gateway(Scripted(), ledger).stream(who(), chat())
    assert stream.result is not None and stream.cache == "miss"
    assert await read(stream) == "answer from openai/gpt-4o-mini"
    assert (await ledger.usage(BUDGET)).reserved_usd == 0 and len(await ledger.calls()) == 1
