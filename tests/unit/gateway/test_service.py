from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from agentflow.gateway.cache import ResponseCache
from agentflow.gateway.router import Router
from agentflow.gateway.service import Gateway, GatewayError
from agentflow.llm import ChatRequest
from agentflow.storage.ledger import Usage
from agentflow.storage.memory_ledger import MemoryLedger
from agentflow.testing import MemoryAuditSink

from .helpers import Scripted, agent, failure, line, provider, static_budgets, who

MSGS = ({"role": "system", "content": "You triage."}, {"role": "user", "content": "my order is late"})


def gateway(upstream: Scripted, *lines: Any, price: tuple[float, float] | None = (1e-6, 2e-6),
            **kwargs: Any) -> Gateway:
    return Gateway(ledger=kwargs.pop("ledger", MemoryLedger()), provider=provider(upstream, prices=lambda model: price),
                   budgets=static_budgets(*lines), rng=random.Random(0), **kwargs)


def chat(model: str = "openai/gpt-4o-mini", **kwargs: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=MSGS, **kwargs)


async def test_a_call_is_reserved_settled_and_recorded_with_its_routing() -> None:
    ledger = MemoryLedger()
    audit = MemoryAuditSink()
    budget = line(limit_usd=1.0)
    gw = gateway(Scripted(cost_usd=0.002), budget, ledger=ledger, audit=audit)
    result = await gw.complete(who(), chat(max_tokens=50))
    assert result.response.text == "answer from openai/gpt-4o-mini"
    assert result.cache == "miss"
    usage = await ledger.usage(budget)
    assert usage.spent_usd == pytest.approx(0.002)
    assert (usage.spent_tokens, usage.reserved_usd, usage.reserved_tokens) == (15, 0.0, 0)
    [call] = await ledger.calls()
    assert (call.namespace, call.workflow, call.node, call.attempt, call.step, call.agent, call.prompt) == (
        "team-a", "triage", "classify", 1, "classify", "triage", "classify-v1")
    assert call.status == "ok" and call.model_used == "openai/gpt-4o-mini" and call.budgets == ("team-a/team",)
    assert call.routing["pick"] == "openai/gpt-4o-mini" and call.routing["mode"] == "fallback"
    assert [e.decision for e in audit.events] == ["ok"]
    assert audit.events[0].subject == "team-a/triage/classify#1"


async def test_a_reservation_names_the_authenticated_attempt_not_the_callers_idempotency_key() -> None:
    ledger, budget = MemoryLedger(), line(limit_usd=1.0)
    seen: list[str] = []
    reserve = ledger.reserve

    async def recording(*args: Any, reference: str, **kwargs: Any) -> Any:
        seen.append(reference)
        return await reserve(*args, reference=reference, **kwargs)

    ledger.reserve = recording  # type: ignore[method-assign]
    upstream = Scripted(cost_usd=0.002)
    me = who()
    await gateway(upstream, budget, ledger=ledger).complete(me, chat(idempotency_key="another-run-uid/x/1"))
    assert seen == [me.reference]  # retention collects reservations by the run the reference names
    assert upstream.received[0].idempotency_key == "another-run-uid/x/1"  # the provider still gets the caller's


async def test_budget_exceeded_refuses_before_the_provider_and_leaves_nothing_reserved() -> None:
    ledger = MemoryLedger()
    upstream = Scripted()
    audit = MemoryAuditSink()
    budget = line(limit_usd=0.0001)  # the estimate (prompt + 1024 default output tokens) cannot fit
    gw = gateway(upstream, budget, ledger=ledger, audit=audit)
    with pytest.raises(GatewayError) as caught:
        await gw.complete(who(), chat())
    assert caught.value.type == "BudgetExceeded" and caught.value.status == 402 and not caught.value.retryable
    assert "team-a/team" in caught.value.message
    assert upstream.received == []
    assert await ledger.usage(budget) == Usage()
    [call] = await ledger.calls()
    assert call.status == "BudgetExceeded" and call.cost_usd == 0.0
    assert audit.events[0].decision == "deny"


async def test_token_budget_counts_the_default_max_tokens_and_sends_it_upstream() -> None:
    upstream = Scripted()
    gw = gateway(upstream, line(limit_usd=None, limit_tokens=530), default_max_tokens=500)
    await gw.complete(who(), chat())
    assert upstream.received[0].max_tokens == 500
    with pytest.raises(GatewayError, match="tokens left"):
        await gw.complete(who(attempt=2), chat(temperature=0.5))  # estimate 25 + 500; 515 of 530 left after the first


async def test_concurrent_calls_never_overspend_a_hard_budget() -> None:
    ledger = MemoryLedger()
    budget = line(limit_usd=0.05)
    upstream = Scripted(cost_usd=0.004)
    gw = gateway(upstream, budget, ledger=ledger, price=(0.0, 0.004 / 100))  # estimate: exactly $0.004

    async def one(i: int) -> bool:
        try:
            await gw.complete(who(node=f"n{i}"), ChatRequest(model="openai/gpt-4o-mini", messages=(
                {"role": "user", "content": f"question {i}"},), max_tokens=100))
        except GatewayError as exc:
            assert exc.type == "BudgetExceeded"
            return False
        return True

    admitted = sum(await asyncio.gather(*(one(i) for i in range(40))))
    usage = await ledger.usage(budget)
    assert admitted == len(upstream.received) == 12
    assert usage.spent_usd == pytest.approx(0.048) and usage.reserved_usd == 0


async def test_the_cache_answers_exact_repeats_for_free_and_a_step_can_opt_out() -> None:
    upstream = Scripted()
    ledger = MemoryLedger()
    gw = gateway(upstream, ledger=ledger)
    first = await gw.complete(who(), chat())
    second = await gw.complete(who(attempt=2), chat())
    assert (first.cache, second.cache) == ("miss", "hit")
    assert second.response.cached and second.response.cost_usd == 0 and second.response.text == first.response.text
    assert len(upstream.received) == 1
    other_ns = await gw.complete(who(namespace="team-b"), chat())
    assert other_ns.cache == "miss"  # tenants never share answers
    opted_out = await gw.complete(who(cache=False), chat())
    assert opted_out.cache == "bypass"
    refreshed = await gw.complete(who(), chat(read_cache=False))
    assert refreshed.cache == "bypass"
    assert len(upstream.received) == 4
    calls = await ledger.calls()
    assert [c.cached for c in calls] == [False, True, False, False, False]
    stats = gw.cache.stats()
    assert (stats.hits, stats.misses) == (1, 2)


async def test_fallback_on_retryable_errors_in_declared_order() -> None:
    upstream = Scripted()
    upstream.script.extend([failure("openai/a"), failure("anthropic/b")])
    a = agent("openai/a", ("anthropic/b", "mistral/c"))
    ledger = MemoryLedger()
    gw = gateway(upstream, line(), ledger=ledger)
    result = await gw.complete(who(a), chat("openai/a"))
    assert [r.model for r in upstream.received] == ["openai/a", "anthropic/b", "mistral/c"]
    assert result.response.model == "mistral/c" and result.response.failed_models == ("openai/a", "anthropic/b")
    [call] = await ledger.calls()
    assert [t["model"] for t in call.routing["tried"]] == ["openai/a", "anthropic/b", "mistral/c"]


async def test_a_non_retryable_error_stops_at_once_and_releases_the_reservation() -> None:
    upstream = Scripted()
    upstream.script.append(failure("openai/a", retryable=False, type="AuthenticationFailed"))
    ledger = MemoryLedger()
    budget = line()
    gw = gateway(upstream, budget, ledger=ledger)
    with pytest.raises(GatewayError) as caught:
        await gw.complete(who(agent("openai/a", ("anthropic/b",))), chat("openai/a"))
    assert caught.value.type == "AuthenticationFailed" and caught.value.status == 400
    assert len(upstream.received) == 1
    assert await ledger.usage(budget) == Usage()
    assert (await ledger.calls())[0].status == "AuthenticationFailed"


async def test_every_candidate_failing_is_a_retryable_502_naming_each() -> None:
    upstream = Scripted()
    upstream.script.extend([failure("openai/a"), failure("anthropic/b", type="RateLimited")])
    gw = gateway(upstream, line())
    with pytest.raises(GatewayError) as caught:
        await gw.complete(who(agent("openai/a", ("anthropic/b",))), chat("openai/a"))
    assert caught.value.status == 502 and caught.value.retryable and caught.value.type == "RateLimited"
    assert "openai/a: ProviderUnavailable; anthropic/b: RateLimited" in caught.value.message


async def test_failing_models_cool_down_across_calls() -> None:
    upstream = Scripted()
    upstream.script.extend([failure("openai/a"), None, failure("openai/a"), None])
    gw = gateway(upstream, router=Router(cooldown_after=2, cooldown_seconds=60))
    a = agent("openai/a", ("anthropic/b",))
    for i in range(3):
        await gw.complete(who(a, attempt=i), chat("openai/a", temperature=0.1 * i))
    # calls 1 and 2: a fails, b answers; a is now cooling: call 3 goes straight to b
    assert [r.model for r in upstream.received] == ["openai/a", "anthropic/b"] * 2 + ["anthropic/b"]


async def test_bandit_mode_records_its_samples() -> None:
    upstream = Scripted()
    ledger = MemoryLedger()
    gw = gateway(upstream, ledger=ledger)
    await gw.complete(who(agent("openai/a", ("anthropic/b",), routing="bandit")), chat("anthropic/b"))
    [call] = await ledger.calls()
    assert call.routing["mode"] == "bandit" and set(call.routing["samples"]) == {"openai/a", "anthropic/b"}
    assert call.model_requested == "anthropic/b" and call.model_used == call.routing["pick"]


async def test_models_outside_the_agent_or_its_residency_are_refused() -> None:
    gw = gateway(Scripted())
    with pytest.raises(GatewayError) as caught:
        await gw.complete(who(), chat("openai/gpt-4o"))
    assert caught.value.type == "ModelNotAllowed" and caught.value.param == "model" and caught.value.status == 400
    with pytest.raises(GatewayError, match="allowed provider") as residency:
        await gw.complete(who(agent("openai/a", allowed=("anthropic",))), chat("openai/a"))
    assert residency.value.status == 403
    no_agent = who()
    object.__setattr__(no_agent, "agent", None)
    with pytest.raises(GatewayError) as none:
        await gw.complete(no_agent, chat())
    assert none.value.type == "NoAgent"


async def test_a_cancelled_call_gives_its_reservation_back() -> None:
    ledger = MemoryLedger()
    budget = line()
    started = asyncio.Event()

    class Slow(Scripted):
        async def complete(self, request: Any, endpoint: Any) -> Any:
            started.set()
            await asyncio.Event().wait()  # never answers: only the cancellation ends it

    gw = gateway(Slow(), budget, ledger=ledger)
    task = asyncio.create_task(gw.complete(who(), chat()))
    await started.wait()
    assert (await ledger.usage(budget)).reserved_usd > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ledger.usage(budget) == Usage()


async def test_credentials_of_the_agent_go_upstream() -> None:
    upstream = Scripted()
    seen: list[str] = []

    async def creds(namespace: str, agent: Any) -> str:
        seen.append(f"{namespace}/{agent.metadata.name}")
        return "sk-from-secret"

    gw = Gateway(ledger=MemoryLedger(), provider=provider(upstream), credentials=creds,
                 cache=ResponseCache(clock=lambda: 0))
    await gw.complete(who(), chat())
    assert upstream.endpoints[0].api_key == "sk-from-secret" and seen == ["team-a/triage"]


class _SlowLedger(MemoryLedger):
    """A ledger whose reserve or settle waits for the test, so a cancellation lands in the middle of it."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.inside = asyncio.Event()
        self.go = asyncio.Event()
        self.finished = asyncio.Event()

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        reservation = await super().reserve(*args, **kwargs)
        if self.slow == "reserve":
            self.inside.set()
            await self.go.wait()
        return reservation

    async def release(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await super().release(*args, **kwargs)
        self.finished.set()

    async def settle(self, *args: Any, **kwargs: Any) -> None:
        if self.slow == "settle":
            self.inside.set()
            await self.go.wait()
        await super().settle(*args, **kwargs)
        self.finished.set()


@pytest.mark.parametrize("where", ["reserve", "settle"])
async def test_a_cancellation_inside_the_ledger_leaves_nothing_held(where: str) -> None:
    # A step pod that is cancelled (its Workflow failed) drops its connection; the gateway handler may be
    # cancelled in the middle of reserve or settle. Neither may leave money held until the reservation's TTL:
    # cancelled in reserve -> given back; cancelled in settle (the provider already answered) -> settled.
    ledger = _SlowLedger(where)
    budget = line()
    gw = gateway(Scripted(), budget, ledger=ledger)
    task = asyncio.create_task(gw.complete(who(), chat()))
    await ledger.inside.wait()
    task.cancel()
    await asyncio.sleep(0)  # the cancellation lands inside the ledger call
    ledger.go.set()  # the shielded ledger work goes on after the cancellation...
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(ledger.finished.wait(), 5)  # ...and gives back or settles
    usage = await ledger.usage(budget)
    assert usage.reserved_usd == 0 and usage.reserved_tokens == 0
    if where == "settle":
        assert usage.spent_usd > 0  # the answered call is charged
    else:
        assert usage.spent_usd == 0
