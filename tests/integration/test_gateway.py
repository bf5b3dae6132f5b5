"""Two gateway servers on loopback, one real PostgreSQL, one hard budget: 100 concurrent calls never
overspend, and the upstream sees exactly the calls that were admitted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import yaml

from agentflow.callback import AttemptClaims, issue_token, new_key
from agentflow.engine.values import StepRequest
from agentflow.gateway.server import GatewayServer
from agentflow.gateway.service import Gateway, litellm_prices, litellm_token_counter
from agentflow.llm import LiteLLMClient, load_litellm
from agentflow.models import Budget
from agentflow.runner.executors import step_request_to_dict
from agentflow.runner.local_gateway import CatalogBudgets
from agentflow.services.gateway import AttemptAuthenticator
from agentflow.storage import PostgresLedger, PostgresStore
from agentflow.storage.ledger import BudgetLine
from unit.llm.fake_openai import FakeOpenAI

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
            "request": step_request_to_dict(request), "manifests": text, "workflow": "quickstart"})
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
        gateway = Gateway(ledger=ledger, upstream=LiteLLMClient(api_key="sk-test", litellm_module=litellm),
                          budgets=CatalogBudgets([budget]), token_counter=litellm_token_counter(),
                          prices=litellm_prices())
        server = GatewayServer(gateway, AttemptAuthenticator(key, store))
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
