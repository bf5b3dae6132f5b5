"""The pod's GatewayClient (HTTP) and the local runner's InProcessGatewayClient against a real Gateway."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow.executors.access import check_environment, model_access
from agentflow.executors.attempt import OneClient
from agentflow.gateway.inprocess import InProcessGatewayClient
from agentflow.gateway.local import LocalModels
from agentflow.gateway.server import AuthError, start_gateway
from agentflow.gateway.service import Attribution, Gateway
from agentflow.llm import ChatRequest, GatewayClient, ModelError
from agentflow.models import Catalog, Workflow
from agentflow.storage.memory_ledger import MemoryLedger

from .helpers import Scripted, agent, failure, line, provider, static_budgets, who

A = agent("openai/a", ("anthropic/b",))
SCHEMA = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}


def request(key: str = "run/classify/1", **kwargs: Any) -> ChatRequest:
    return ChatRequest(model="openai/a", messages=({"role": "user", "content": "hello"},), idempotency_key=key,
                       **kwargs)


class Served:
    def __init__(self, gateway: Gateway, url: str, upstream: Scripted) -> None:
        self.gateway, self.url, self.upstream = gateway, url, upstream


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    upstream = Scripted(cost_usd=0.0025)
    gw = Gateway(ledger=MemoryLedger(), provider=provider(upstream, prices=lambda m: (0.0, 1e-6)),
                 budgets=static_budgets(line(limit_usd=0.01)), rng=random.Random(0))

    async def auth(token: str) -> Attribution:
        if token != "tok":
            raise AuthError("bad token")
        return who(A)

    server = await start_gateway(gw, auth)
    try:
        yield Served(gw, f"http://127.0.0.1:{server.port}/v1", upstream)
    finally:
        await server.stop()


WORKFLOW = Workflow.model_validate({"metadata": {"name": "wf"}, "spec": {"steps": [
    {"name": "s", "kind": "llm", "agentRef": {"name": "triage"}, "promptRef": {"name": "p"}}]}})


def test_the_environment_picks_the_gateway_and_needs_the_token() -> None:
    env = {"AGENTFLOW_GATEWAY_URL": "http://gw:8082/", "AGENTFLOW_TOKEN": "t", "OPENAI_API_KEY": "sk-ignored"}
    access = model_access(env, WORKFLOW, Catalog())
    assert isinstance(access, OneClient) and isinstance(access.chat, GatewayClient)
    assert access.chat.base_url == "http://gw:8082"
    with pytest.raises(ValueError, match="neither AGENTFLOW_TOKEN_FILE nor AGENTFLOW_TOKEN"):
        check_environment({"AGENTFLOW_GATEWAY_URL": "http://gw:8082"})
    with pytest.raises(ValueError, match="not an http"):
        check_environment({"AGENTFLOW_GATEWAY_URL": "gw:8082", "AGENTFLOW_TOKEN": "t"})
    with pytest.raises(ValueError, match="AGENTFLOW_MODEL_MODE"):
        check_environment({"AGENTFLOW_MODEL_MODE": "sometimes"})
    offline = model_access({"AGENTFLOW_GATEWAY_URL": "http://gw", "AGENTFLOW_MODEL_MODE": "offline"}, WORKFLOW,
                           Catalog())
    assert isinstance(offline, LocalModels) and not offline.gateway.provider.live


async def test_pod_client_records_the_gateway_cost_and_model(served: Served) -> None:
    client = GatewayClient(served.url, "tok")
    try:
        response = await client.complete(request(response_format=JSON_SCHEMA, max_tokens=100, temperature=0.0))
        assert response.text == "answer from openai/a" and response.model == "openai/a"
        assert response.cost_usd == pytest.approx(0.0025) and not response.cached
        assert (response.input_tokens, response.output_tokens) == (10, 5)
        [sent] = served.upstream.received
        assert sent.output_schema == SCHEMA and sent.response_format == JSON_SCHEMA
        assert sent.max_tokens == 100 and sent.idempotency_key == "run/classify/1"
        again = await client.complete(request(response_format=JSON_SCHEMA, max_tokens=100, temperature=0.0))
        assert again.cached and again.cost_usd == 0
        plain = await client.complete(request(max_tokens=100, temperature=0.0))
        assert not plain.cached, "a JSON-mode answer must not answer a plain request (response_format is in the key)"
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


async def test_only_the_gateway_routes_a_call_over_the_agents_models(served: Served) -> None:
    served.upstream.script.extend([failure("openai/a"), failure("anthropic/b")])
    client = GatewayClient(served.url, "tok")
    try:
        with pytest.raises(ModelError) as caught:
            await client.complete(request())
        assert caught.value.retryable and caught.value.type == "ProviderUnavailable"
        assert "every model failed" in caught.value.message
        assert [r.model for r in served.upstream.received] == ["openai/a", "anthropic/b"]  # once each
        response = await client.complete(request("run/classify/2"))
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


async def test_in_process_client_charges_its_attempt() -> None:
    ledger = MemoryLedger()
    gw = Gateway(ledger=ledger, provider=provider(Scripted(), prices=lambda m: (0.0, 1e-6)),
                 budgets=static_budgets(line(limit_usd=1.0)))
    client = InProcessGatewayClient(gw, who(A))
    response = await client.complete(request())
    assert response.model == "openai/a"
    [call] = await ledger.calls()
    assert call.agent == "triage" and call.budgets == ("team-a/team",)
    with pytest.raises(ModelError) as caught:
        await client.complete(request(max_tokens=10**7))  # $10 > $1
    assert caught.value.type == "BudgetExceeded" and not caught.value.retryable
