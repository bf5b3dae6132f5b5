"""Two gateway servers on loopback, one real PostgreSQL, one hard budget: 100 concurrent calls never
overspend, and the upstream sees exactly the calls that were admitted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agentflow.engine.values import StepRequest
from agentflow.gateway.budgets import CatalogBudgets
from agentflow.gateway.endpoints import EndpointPolicy
from agentflow.gateway.server import GatewayServer
from agentflow.gateway.service import Gateway
from agentflow.llm import Provider, litellm_provider
from agentflow.llm.litellm_upstream import LiteLLMUpstream
from agentflow.llm.litellm_upstream import load as load_litellm
from agentflow.llm.openai_upstream import ByProvider, OpenAIUpstream
from agentflow.models import Budget
from agentflow.security.identity import SignedTokens
from agentflow.security.tokens import AttemptClaims, issue_token, new_key
from agentflow.services.gateway import AttemptAuthenticator
from agentflow.storage import PostgresLedger, PostgresStore
from agentflow.storage.ledger import BudgetLine
from unit.llm.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.integration

QUICKSTART = Path(__file__).parents[2] / "examples" / "manifests" / "quickstart.yaml"
LIMIT_USD = 0.0004
NAMESPACE = "gw-int"


def manifests(api_base: str) -> str:
    docs = list(yaml.safe_load_all(QUICKSTART.read_text()))
    for doc in docs:
        if doc["kind"] == "Agent":
            doc["spec"]["model"]["apiBase"] = api_base
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


async def test_two_gateways_share_one_hard_budget(postgres_dsn: str, store: PostgresStore,
                                                 fake: FakeOpenAI) -> None:
    key = new_key()
    run_uid = f"gw-{uuid.uuid4().hex[:8]}"
    text = manifests(fake.base_url)
    tokens = []
    for attempt in range(1, 11):
        request = StepRequest(run_id=run_uid, node="classify", step="classify", kind="llm", attempt=attempt,
                              inputs={"ticket": "late"})
        await store.put_attempt(run_uid, "classify", attempt, {
            "request": request.to_dict(), "manifests": text, "workflow": "quickstart"})
        tokens.append(issue_token(key, AttemptClaims(run_uid, NAMESPACE, "quickstart", "classify", attempt,
                                                     time.time() + 600)))
    budget = Budget.model_validate({
        "metadata": {"name": "hard", "namespace": NAMESPACE, "uid": f"uid-{run_uid}"},
        "spec": {"limits": {"usd": LIMIT_USD}, "period": "total"},
    })
    litellm = load_litellm()
    ledgers = [await PostgresLedger.connect(postgres_dsn, max_size=6) for _ in range(2)]
    await ledgers[0].migrate()
    servers = []
    for ledger in ledgers:
        live = litellm_provider()
        upstream = LiteLLMUpstream(api_key="sk-test", litellm_module=litellm)
        gateway = Gateway(ledger=ledger, provider=Provider(upstream, live.count_tokens, live.prices, live=True),
                          budgets=CatalogBudgets([budget]),
                          endpoints=EndpointPolicy.parse({"endpoints": [{"url": fake.base_url,
                                                                         "environmentKey": True}]}))
        server = GatewayServer(gateway, AttemptAuthenticator(SignedTokens(key), store))
        await server.start("127.0.0.1", 0)
        servers.append(server)
    try:
        async with aiohttp.ClientSession() as session:

            async def call(i: int) -> tuple[int, str]:
                url = f"http://127.0.0.1:{servers[i % 2].port}/v1/chat/completions"
                body = {"model": "openai/gpt-4o-mini", "max_tokens": 10,
                        "messages": [{"role": "user", "content": f"ticket number {i}: where is my parcel?"}]}
                async with session.post(url, json=body, headers={"Authorization": f"Bearer {tokens[i % 10]}"}) as r:
                    answer = await r.json()
                    return r.status, answer["error"]["type"] if r.status != 200 else "ok"

            results = await asyncio.gather(*(call(i) for i in range(100)))
        admitted = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] != 200]
        assert all(r == (402, "BudgetExceeded") for r in refused), set(refused)
        assert admitted and refused
        assert len(fake.received) == len(admitted)  # the upstream saw exactly the admitted calls
        line = BudgetLine(f"uid-{run_uid}", NAMESPACE, "hard", datetime(1970, 1, 1, tzinfo=UTC), None,
                          LIMIT_USD, None, True)
        usage = await ledgers[0].usage(line)
        assert usage.spent_usd <= LIMIT_USD
        assert usage.reserved_usd == 0 and usage.spent_tokens == 18 * len(admitted)
        calls = await ledgers[1].calls(namespace=NAMESPACE, limit=1000)
        mine = [c for c in calls if c.run_uid == run_uid]
        assert sum(c.status == "ok" for c in mine) == len(admitted)
        assert sum(c.status == "BudgetExceeded" for c in mine) == len(refused)
        print(f"admitted {len(admitted)}, refused {len(refused)}, spent ${usage.spent_usd:.6f} of ${LIMIT_USD}")
    finally:
        for server in servers:
            await server.stop()
        for ledger in ledgers:
            await ledger.close()


@pytest.mark.parametrize("upstream_kind", ["litellm", "openai-http"])
async def test_streams_leave_nothing_reserved_on_postgres(postgres_dsn: str, store: PostgresStore, fake: FakeOpenAI,
                                                         upstream_kind: str) -> None:
    """A stream read to its end, one the client leaves and one the provider cuts: each is settled once on the
    PostgresLedger and nothing stays reserved."""
    key = new_key()
    run_uid = f"gws-{uuid.uuid4().hex[:8]}"
    text = manifests(fake.base_url)
    tokens = []
    for attempt in range(1, 4):
        request = StepRequest(run_id=run_uid, node="classify", step="classify", kind="llm", attempt=attempt,
                              inputs={"ticket": "late"})
        await store.put_attempt(run_uid, "classify", attempt, {
            "request": request.to_dict(), "manifests": text, "workflow": "quickstart"})
        tokens.append(issue_token(key, AttemptClaims(run_uid, NAMESPACE, "quickstart", "classify", attempt,
                                                     time.time() + 600)))
    budget = Budget.model_validate({"metadata": {"name": "streams", "namespace": NAMESPACE, "uid": f"uid-{run_uid}"},
                                    "spec": {"limits": {"usd": 1.0}, "period": "total"}})
    ledger = await PostgresLedger.connect(postgres_dsn, max_size=4)
    await ledger.migrate()
    live = litellm_provider()
    upstream: Any = LiteLLMUpstream(api_key="sk-test", litellm_module=load_litellm())
    if upstream_kind == "openai-http":
        upstream = ByProvider(OpenAIUpstream(api_key="sk-test", prices=live.prices), upstream)
    gateway = Gateway(ledger=ledger, provider=Provider(upstream, live.count_tokens, live.prices, live=True),
                      budgets=CatalogBudgets([budget]),
                      endpoints=EndpointPolicy.parse({"endpoints": [{"url": fake.base_url, "environmentKey": True}]}))
    server = GatewayServer(gateway, AttemptAuthenticator(SignedTokens(key), store))
    await server.start("127.0.0.1", 0)
    fake.script.extend([Reply(text="whole answer " * 5, completion_tokens=15),
                        Reply(text="word " * 200, piece=5, delay=0.02, completion_tokens=200),
                        Reply(text="word " * 20, piece=5, fail_after=4)])
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for i, token in enumerate(tokens):
                body = {"model": "openai/gpt-4o-mini", "stream": True,
                        "messages": [{"role": "user", "content": f"stream {i}"}]}
                response = await session.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
                assert response.status == 200
                if i == 1:
                    for _ in range(3):
                        await response.content.readline()
                    response.close()  # the client leaves mid-stream
                else:
                    raw = await response.read()
                    assert raw.endswith(b"data: [DONE]\n\n") == (i == 0)
        line = BudgetLine(f"uid-{run_uid}", NAMESPACE, "streams", datetime(1970, 1, 1, tzinfo=UTC), None, 1.0,
                          None, True)
        for _ in range(100):
            usage = await ledger.usage(line)
            mine = [c for c in await ledger.calls(namespace=NAMESPACE, limit=1000) if c.run_uid == run_uid]
            if usage.reserved_usd == 0 and len(mine) == 3:
                break
            await asyncio.sleep(0.05)
        assert usage.reserved_usd == 0 and usage.reserved_tokens == 0
        statuses = sorted(c.status for c in mine)
        assert statuses[0] == "ClientDisconnected" and statuses[1] in ("ModelConnectionError", "ProviderUnavailable")
        assert statuses[2] == "ok"
        assert usage.spent_usd == pytest.approx(sum(c.cost_usd for c in mine)) and usage.spent_usd > 0
    finally:
        await server.stop()
        if isinstance(upstream, ByProvider):
            await upstream.close()
        await ledger.close()
