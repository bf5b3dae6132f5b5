"""The pod's GatewayClient (HTTP) and the local runner's InProcessGatewayClient against a real Gateway."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow.gateway.inprocess import InProcessGatewayClient
from agentflow.gateway.server import AuthError, start_gateway
from agentflow.gateway.service import Attribution, Gateway
from agentflow.llm import (
    IDEMPOTENCY_KEY,
    FallbackClient,
    GatewayClient,
    ModelError,
    ModelRequest,
    OfflineModel,
    make_model_client,
)
from agentflow.storage.memory_ledger import MemoryLedger

from .helpers import Scripted, agent, failure, line, static_budgets, who

A = agent("openai/a", ("anthropic/b",))
SCHEMA = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}


def request(key: str = "run/classify/1", **kwargs: Any) -> ModelRequest:
    return ModelRequest(model="openai/a", messages=({"role": "user", "content": "hello"},),
                        metadata={IDEMPOTENCY_KEY: key}, **kwargs)


class Served:
    def __init__(self, gateway: Gateway, url: str, upstream: Scripted) -> None:
        self.gateway, self.url, self.upstream = gateway, url, upstream


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    upstream = Scripted(cost_usd=0.0025)
    gw = Gateway(ledger=MemoryLedger(), upstream=upstream, budgets=static_budgets(line(limit_usd=0.01)),
                 prices=lambda m: (0.0, 1e-6), rng=random.Random(0))

    async def auth(token: str) -> Attribution:
        if token != "tok":
            raise AuthError("bad token")
        return who(A)

    server = await start_gateway(gw, auth)
    try:
        yield Served(gw, f"http://127.0.0.1:{server.port}/v1", upstream)
    finally:
        await server.stop()


def test_make_model_client_picks_the_gateway_and_needs_the_token() -> None:
    client = make_model_client({"AGENTFLOW_GATEWAY_URL": "http://gw:8082/", "AGENTFLOW_TOKEN": "t",
                                "OPENAI_API_KEY": "sk-ignored"})
    assert isinstance(client, GatewayClient) and client.base_url == "http://gw:8082"
    with pytest.raises(ValueError, match="AGENTFLOW_TOKEN is empty"):
        make_model_client({"AGENTFLOW_GATEWAY_URL": "http://gw:8082"})
    with pytest.raises(ValueError, match="not an http"):
        make_model_client({"AGENTFLOW_GATEWAY_URL": "gw:8082", "AGENTFLOW_TOKEN": "t"})
    offline = make_model_client({"AGENTFLOW_GATEWAY_URL": "http://gw", "AGENTFLOW_MODEL_MODE": "offline"})
    assert isinstance(offline, OfflineModel)


async def test_pod_client_records_the_gateway_cost_and_model(served: Served) -> None:
    client = GatewayClient(served.url, "tok")
    try:
        response = await client.complete(request(output_schema=SCHEMA, max_tokens=100, temperature=0.0))
        assert response.text == "answer from openai/a" and response.model == "openai/a"
        assert response.cost_usd == pytest.approx(0.0025) and not response.cached
        assert (response.input_tokens, response.output_tokens) == (10, 5)
        [sent] = served.upstream.received
        assert sent.output_schema == SCHEMA and sent.max_tokens == 100 and sent.idempotency_key == "run/classify/1"
        again = await client.complete(request(output_schema=SCHEMA, max_tokens=100, temperature=0.0))
        assert again.cached and again.cost_usd == 0
    finally:
        await client.close()


async def test_budget_exceeded_reaches_the_pod_as_a_non_retryable_error(served: Served) -> None:
    client = GatewayClient(served.url, "tok")
    try:
        with pytest.raises(ModelError) as caught:
            await client.complete(request(max_tokens=20_000))  # 20000 * 1e-6 = $0.02 > $0.01
        assert caught.value.type == "BudgetExceeded" and caught.value.retryable is False
        assert "exhausted" in caught.value.message
        assert served.upstream.received == []
    finally:
        await client.close()


async def test_a_routed_failure_is_not_routed_again_by_the_pods_fallbacks(served: Served) -> None:
    served.upstream.script.extend([failure("openai/a"), failure("anthropic/b")])
    client = GatewayClient(served.url, "tok")
    try:
        with pytest.raises(ModelError) as caught:
            await FallbackClient(client, ["anthropic/b"]).complete(request())
        assert caught.value.retryable and caught.value.type == "ProviderUnavailable"
        assert [r.model for r in served.upstream.received] == ["openai/a", "anthropic/b"]  # once each
        # The engine's next attempt has a new key and is routed again.
        response = await FallbackClient(client, ["anthropic/b"]).complete(request("run/classify/2"))
        assert response.model == "openai/a"
    finally:
        await client.close()


async def test_bad_token_and_unreachable_gateway(served: Served) -> None:
    client = GatewayClient(served.url, "forged")
    try:
        with pytest.raises(ModelError) as caught:
            await client.complete(request())
        assert caught.value.type == "Unauthorized" and not caught.value.retryable
    finally:
        await client.close()
    gone = GatewayClient("http://127.0.0.1:9", "tok")
    try:
        with pytest.raises(ModelError) as unreachable:
            await gone.complete(request())
        assert unreachable.value.type == "GatewayUnavailable" and unreachable.value.retryable
    finally:
        await gone.close()


async def test_in_process_client_charges_the_attributed_attempt() -> None:
    ledger = MemoryLedger()
    upstream = Scripted()
    gw = Gateway(ledger=ledger, upstream=upstream, budgets=static_budgets(line(limit_usd=1.0)),
                 prices=lambda m: (0.0, 1e-6))
    seen: list[str] = []

    def attribute(req: ModelRequest) -> Attribution:
        seen.append(req.metadata[IDEMPOTENCY_KEY])
        return who(A)

    client = InProcessGatewayClient(gw, attribute)
    response = await client.complete(request())
    assert response.model == "openai/a" and seen == ["run/classify/1"]
    [call] = await ledger.calls()
    assert call.agent == "triage" and call.budgets == ("team-a/team",)
    with pytest.raises(ModelError) as caught:
        await client.complete(request(max_tokens=10**7))  # $10 > $1
    assert caught.value.type == "BudgetExceeded" and not caught.value.retryable
