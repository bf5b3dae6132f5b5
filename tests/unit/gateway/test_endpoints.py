"""The platform's endpoint policy: an Agent's apiBase must be listed for its namespace, the gateway's own key
goes only where the platform allows it, regions enforce dataResidency.allowedRegions, and cache entries of
different endpoints or credentials never answer each other."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentflow.gateway.endpoints import EndpointPolicy, EndpointPolicyError
from agentflow.gateway.service import Gateway, GatewayError
from agentflow.llm import OFFLINE_MODEL_NAME, ChatRequest, offline_provider
from agentflow.models import Agent
from agentflow.storage.memory_ledger import MemoryLedger

from .helpers import Scripted, provider, who

POLICY = EndpointPolicy.parse({
    "endpoints": [
        {"url": "https://llm.internal.example/v1", "namespaces": ["team-*"], "environmentKey": True,
         "region": "eu-west-1"},
        {"url": "http://vllm.team-b.svc:8000/v1", "namespaces": ["team-b"], "region": "eu-central-1"},
    ],
    "providerRegions": {"openai": "us", "anthropic": "us"},
})


def agent(api_base: str | None = None, *, fallbacks: tuple[str, ...] = (), regions: tuple[str, ...] = (),
          model: str = "openai/gpt-4o-mini") -> Agent:
    spec: dict[str, Any] = {"name": model, "fallbacks": list(fallbacks)}
    if api_base is not None:
        spec["apiBase"] = api_base
    return Agent.model_validate({"metadata": {"name": "triage"}, "spec": {
        "role": "r", "model": spec, "dataResidency": {"allowedRegions": list(regions)}}})


def gateway(upstream: Scripted, **kwargs: Any) -> Gateway:
    return Gateway(ledger=MemoryLedger(), provider=provider(upstream), endpoints=POLICY, rng=random.Random(0),
                   **kwargs)


def chat(model: str = "openai/gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model=model, messages=({"role": "user", "content": "hi"},))


@pytest.mark.parametrize(("api_base", "namespace"), [
    ("http://attacker.example/v1", "team-a"),  # not listed
    ("http://169.254.169.254/latest", "team-a"),  # metadata: not listed
    ("http://vllm.team-b.svc:8000/v1", "team-a"),  # listed for another namespace only
    ("https://llm.internal.example/v1", "prod"),  # listed for team-* only
    ("https://llm.internal.example.attacker.net/v1", "team-a"),  # a prefix of the host is not the host
    ("https://user:pw@llm.internal.example/v1", "team-a"),  # credentials in the URL
])
async def test_an_unlisted_endpoint_is_refused_before_anything_is_sent(api_base: str, namespace: str) -> None:
    upstream = Scripted()
    with pytest.raises(GatewayError) as caught:
        await gateway(upstream).complete(who(agent(api_base), namespace=namespace), chat())
    assert caught.value.type == "EndpointNotAllowed" and caught.value.status == 403
    assert "spec.model.apiBase" in caught.value.message
    assert upstream.received == []


async def test_a_listed_endpoint_gets_the_platform_key_only_where_allowed() -> None:
    upstream = Scripted()
    gw = gateway(upstream)
    await gw.complete(who(agent("https://llm.internal.example/v1/"), namespace="team-a"), chat())
    await gw.complete(who(agent("http://vllm.team-b.svc:8000/v1"), namespace="team-b"), chat())
    await gw.complete(who(agent(None), namespace="team-a"), chat())
    internal, vllm, provider_own = upstream.endpoints
    assert internal.api_base == "https://llm.internal.example/v1" and internal.environment_key
    assert vllm.api_base == "http://vllm.team-b.svc:8000/v1" and not vllm.environment_key and vllm.api_key is None
    assert provider_own.api_base is None and provider_own.environment_key


async def test_allowed_regions_skip_models_outside_them_and_name_each() -> None:
    upstream = Scripted()
    gw = gateway(upstream)
    eu = agent("https://llm.internal.example/v1", regions=("eu-west-1",))
    await gw.complete(who(eu, namespace="team-a"), chat())
    assert upstream.endpoints[-1].api_base == "https://llm.internal.example/v1"
    us_only = agent(None, fallbacks=("anthropic/claude-3-5-haiku",), regions=("eu-west-1", "eu-central-1"))
    with pytest.raises(GatewayError) as caught:
        await gw.complete(who(us_only, namespace="team-a"), chat())
    assert caught.value.type == "DataResidencyViolation"
    assert "openai/gpt-4o-mini: region us" in caught.value.message
    assert "anthropic/claude-3-5-haiku: region us" in caught.value.message


async def test_the_offline_model_answers_an_agent_with_allowed_regions() -> None:
    """It answers in this process (nothing is sent anywhere): examples/manifests/fraud-detection.yaml runs locally."""
    gw = Gateway(ledger=MemoryLedger(), provider=offline_provider(), endpoints=POLICY, rng=random.Random(0))
    result = await gw.complete(who(agent(None, regions=("eu-west-1",)), namespace="team-a"), chat())
    assert result.response.model == OFFLINE_MODEL_NAME


async def test_cache_entries_of_another_endpoint_or_agent_never_answer() -> None:
    upstream = Scripted()
    gw = gateway(upstream)
    internal = agent("https://llm.internal.example/v1")
    await gw.complete(who(internal, namespace="team-b"), chat())
    # the same prompt through another endpoint of the same namespace: a miss, not the first endpoint's answer
    again = await gw.complete(who(agent("http://vllm.team-b.svc:8000/v1"), namespace="team-b"), chat())
    assert again.cache != "hit" and len(upstream.received) == 2
    # and through the first endpoint again: a hit
    hit = await gw.complete(who(internal, namespace="team-b"), chat())
    assert hit.cache == "hit" and len(upstream.received) == 2


async def test_cache_entries_of_another_credential_never_answer() -> None:
    upstream = Scripted()
    keys = iter(["sk-one", "sk-two", "sk-one"])

    async def credentials(namespace: str, a: Agent) -> str:
        return next(keys)

    gw = gateway(upstream, credentials=credentials)
    first = await gw.complete(who(agent(None), namespace="team-a"), chat())
    second = await gw.complete(who(agent(None), namespace="team-a"), chat())
    third = await gw.complete(who(agent(None), namespace="team-a"), chat())
    assert (first.cache, second.cache, third.cache) == ("miss", "miss", "hit")


def test_a_malformed_policy_names_the_field() -> None:
    for data, words in [
        ({"endpoints": [{"url": "ftp://x"}]}, "endpoints[0].url"),
        ({"endpoints": [{"url": "http://169.254.169.254/v1"}]}, "link-local"),
        ({"endpoints": [{"url": "http://x/v1", "namespaces": []}]}, "endpoints[0].namespaces"),
        ({"endpoints": [{"url": "http://x/v1", "token": "x"}]}, "endpoints[0].token: unknown field"),
        ({"endpoint": []}, "endpoint: unknown field"),
    ]:
        with pytest.raises(EndpointPolicyError, match=words.replace("[", r"\[").replace("]", r"\]")):
            EndpointPolicy.parse(data, "policy")
