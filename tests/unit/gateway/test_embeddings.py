"""The gateway's embeddings (/v1/embeddings): the Agent's one embedding model, the offline one computed in place,
a provider's call reserved, settled, recorded, audited and cached per text, refusals; and long-term memory saving
and searching through it over HTTP (the path of a step pod)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.gateway.embeddings import Embeddings
from agentflow.gateway.server import start_gateway
from agentflow.gateway.service import Attribution, Gateway, GatewayError
from agentflow.llm import Endpoint
from agentflow.llm.gateway_client import GatewayClient
from agentflow.llm.litellm_upstream import count_message_tokens
from agentflow.memory import EmbeddingError, Scope
from agentflow.memory.embeddings import hashing_vector
from agentflow.memory.gateway import GatewayEmbedder
from agentflow.memory.local import SqliteMemoryStore
from agentflow.models import Agent
from agentflow.storage.memory_ledger import MemoryLedger
from agentflow.testing import MemoryAuditSink

from .helpers import Scripted, line, provider, static_budgets, who

REAL = "openai/text-embedding-3-small"


def agent(model: str | None) -> Agent:
    memory = {"longTerm": {"embeddingModel": model}} if model else {}
    return Agent.model_validate({"metadata": {"name": "triage"}, "spec": {
        "role": "triage", "model": {"name": "openai/gpt-4o-mini"}, "memory": memory}})


class FakeEmbeddings:
    """An embedding upstream: the offline vectors, 7 tokens per text, every call kept."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, model: str, texts: Sequence[str], endpoint: Endpoint,
                    timeout_seconds: float | None = None) -> tuple[list[list[float]], int]:
        self.calls.append(list(texts))
        return [hashing_vector(t) for t in texts], 7 * len(texts)


def gateway(*lines: Any, ledger: MemoryLedger | None = None, audit: MemoryAuditSink | None = None) -> Gateway:
    return Gateway(ledger=ledger or MemoryLedger(), provider=provider(Scripted(), prices=lambda m: (1e-6, 0.0)),
                   budgets=static_budgets(*lines), rng=random.Random(0), audit=audit)


async def test_a_provider_call_is_reserved_settled_recorded_audited_and_cached_per_text() -> None:
    ledger, audit, upstream, budget = MemoryLedger(), MemoryAuditSink(), FakeEmbeddings(), line(limit_usd=1.0)
    embeddings = Embeddings(gateway(budget, ledger=ledger, audit=audit), upstream)
    me = who(agent(REAL))
    first = await embeddings.embed(me, REAL, ["refunds take five days", "shipping to Norway"])
    assert first.vectors == [hashing_vector("refunds take five days"), hashing_vector("shipping to Norway")]
    assert (first.cache, first.input_tokens, first.cost_usd) == ("miss", 14, pytest.approx(14e-6))
    usage = await ledger.usage(budget)
    assert usage.spent_tokens == 14 and usage.reserved_usd == 0
    (call,) = await ledger.calls()
    assert (call.model_used, call.input_tokens, call.output_tokens, call.status, call.budgets) == (
        REAL, 14, 0, "ok", ("team-a/team",))
    assert [e.kind for e in audit.events] == ["model_call"] and audit.events[0].data["embeddings"] == {"embeddings": 2}
    again = await embeddings.embed(me, REAL, ["shipping to Norway", "a new text"])
    assert upstream.calls == [["refunds take five days", "shipping to Norway"], ["a new text"]]
    assert again.vectors[0] == first.vectors[1]
    assert (await embeddings.embed(me, REAL, ["a new text"])).cache == "hit"


async def test_refusals() -> None:
    embeddings = Embeddings(gateway(line(limit_usd=1e-9)), FakeEmbeddings())
    cases: list[tuple[Attribution, str, list[str], str, int]] = [
        (who(agent(REAL)), "openai/other", ["x"], "ModelNotAllowed", 400),
        (who(agent(None)), REAL, ["x"], "ModelNotAllowed", 400),
        (who(agent(REAL)), REAL, [], "InvalidInput", 400),
        (who(agent(REAL)), REAL, ["x"], "BudgetExceeded", 402),
    ]
    for me, model, texts, kind, status in cases:
        with pytest.raises(GatewayError) as caught:
            await embeddings.embed(me, model, texts)
        assert (caught.value.type, caught.value.status) == (kind, status), caught.value
    offline = Embeddings(gateway())  # no provider that embeds: only the offline model
    with pytest.raises(GatewayError) as caught:
        await offline.embed(who(agent(REAL)), REAL, ["x"])
    assert caught.value.type == "NoEmbeddingProvider" and "agentflow/hashing-v1" in caught.value.message


class CharacterTokens(FakeEmbeddings):
    """An upstream that charges a token per character (about what cl100k_base gives CJK text)."""

    async def embed(self, model: str, texts: Sequence[str], endpoint: Endpoint,
                    timeout_seconds: float | None = None) -> tuple[list[list[float]], int]:
        self.calls.append(list(texts))
        return [hashing_vector(t) for t in texts], sum(len(t) for t in texts)


async def test_a_hard_token_budget_is_never_overspent_by_text_that_characters_over_4_undercount() -> None:
    ledger, upstream, budget = MemoryLedger(), CharacterTokens(), line(limit_usd=None, limit_tokens=1000)
    gw = Gateway(ledger=ledger, provider=provider(Scripted(), prices=lambda m: (1e-6, 0.0),
                                                  count_tokens=count_message_tokens),
                 budgets=static_budgets(budget), rng=random.Random(0))
    embeddings = Embeddings(gw, upstream)
    with pytest.raises(GatewayError) as caught:
        await embeddings.embed(who(agent(REAL)), REAL, ["\u5b57" * 3000])  # 3,000 CJK characters
    assert caught.value.type == "BudgetExceeded" and upstream.calls == []
    assert (await ledger.usage(budget)).spent_tokens == 0
    done = await embeddings.embed(who(agent(REAL)), REAL, ["\u5b57" * 600])
    assert done.input_tokens == 600 and (await ledger.usage(budget)).spent_tokens == 600


async def test_memory_through_the_gateway_over_http(tmp_path: Path) -> None:
    me = who(agent("agentflow/hashing-v1"))
    stranger = who(agent(None))

    async def authenticate(token: str) -> Attribution:
        return me if token == "attempt-token" else stranger

    server = await start_gateway(gateway(), authenticate)
    client = GatewayClient(f"http://127.0.0.1:{server.port}/v1", "attempt-token")
    try:
        store = SqliteMemoryStore(tmp_path / "m.sqlite3", GatewayEmbedder(client, "agentflow/hashing-v1"))
        where = Scope("team-a", "triage")
        saved = await store.save(where, "Refunds take five days.")
        await store.save(where, "Shipping to Norway takes a week.")
        assert [h["id"] for h in await store.search(where, "refund", k=1)] == [saved]
        other = GatewayClient(f"http://127.0.0.1:{server.port}", "other")
        with pytest.raises(EmbeddingError, match="ModelNotAllowed"):
            await GatewayEmbedder(other, "agentflow/hashing-v1").embed(["x"])
        await other.close()
    finally:
        await client.close()
        await server.stop()
