"""The MemoryStore contract, run against every store: SqliteMemoryStore here (tests/unit/memory/test_local.py),
PostgresMemoryStore with pgvector in tests/integration/test_memory.py. A subclass gives the ``store`` fixture, built
with :class:`Clock` ``clock``, the offline embedder and a MemoryAuditSink ``audit``."""

from __future__ import annotations

import uuid

import pytest

from agentflow.memory import InvalidMemory, MemoryNotFound, MemoryStore, Scope
from agentflow.testing import MemoryAuditSink


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


FACTS = [
    "The customer Ann Lee prefers refunds to store credit.",
    "Invoices are sent on the first business day of each month.",
    "Shipping to Norway takes five working days.",
    "Ann Lee's account was upgraded to the premium plan in March.",
    "Refunds above 500 euros need a manager's approval.",
]


def scope(agent: str = "support") -> Scope:
    # Every test its own namespace: the PostgreSQL database is shared by the session.
    return Scope(f"ns-{uuid.uuid4().hex[:8]}", agent)


class MemoryContract:
    clock: Clock
    audit: MemoryAuditSink

    async def test_search_finds_the_closest_facts_first(self, store: MemoryStore) -> None:
        where = scope()
        ids = [await store.save(where, fact, {"n": i}) for i, fact in enumerate(FACTS)]
        hits = await store.search(where, "how long does shipping to Norway take", k=2)
        assert hits[0]["id"] == ids[2]
        assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
        assert hits[0]["text"] == FACTS[2] and hits[0]["metadata"] == {"n": 2}
        assert hits[0]["tokens"] == (len(FACTS[2]) + 3) // 4
        refunds = await store.search(where, "refund", k=5)
        assert {h["id"] for h in refunds[:2]} == {ids[0], ids[4]}  # word pieces: refund ~ refunds

    async def test_scopes_do_not_see_each_other(self, store: MemoryStore) -> None:
        mine, other_agent = scope(), None
        other_agent = Scope(mine.namespace, "billing")
        await store.save(mine, FACTS[0])
        assert await store.search(other_agent, FACTS[0], k=5) == []
        assert await store.search(Scope("elsewhere-" + mine.namespace, "support"), FACTS[0], k=5) == []

    async def test_the_token_budget_keeps_the_best_that_fit(self, store: MemoryStore) -> None:
        where = scope()
        long = "Norway shipping " + "detail " * 200
        await store.save(where, long)
        short = await store.save(where, "Shipping to Norway: five days.")
        hits = await store.search(where, "shipping Norway", k=5, token_budget=20)
        assert [h["id"] for h in hits] == [short]  # the long one does not fit, the next one does

    async def test_facts_expire_after_their_ttl(self, store: MemoryStore) -> None:
        where = scope()
        keep = await store.save(where, "Refunds take five days.")
        await store.save(where, "The refund queue is paused today.", ttl_seconds=3600)
        assert len(await store.search(where, "refund", k=5)) == 2
        self.clock.now += 3601
        assert [h["id"] for h in await store.search(where, "refund", k=5)] == [keep]
        assert [e["id"] for e in await store.entries(where)] == [keep]

    async def test_forget_by_id(self, store: MemoryStore) -> None:
        where = scope()
        a = await store.save(where, FACTS[0])
        b = await store.save(where, FACTS[1])
        assert await store.forget(where, memory_id=a, actor="user:dpo") == [a]
        assert [e["id"] for e in await store.entries(where)] == [b]
        with pytest.raises(MemoryNotFound):
            await store.forget(where, memory_id=a)
        with pytest.raises(MemoryNotFound):  # an id of another scope is not found either
            await store.forget(Scope(where.namespace, "billing"), memory_id=b)
        event = self.audit.events[0]
        assert (event.kind, event.actor, event.subject, event.decision) == (
            "memory_forget", "user:dpo", f"{where.namespace}/support", "ok")
        assert event.data["by"] == "id" and event.data["ids"] == [a] and event.data["count"] == 1

    async def test_forget_everything_mentioning_a_subject_across_agents(self, store: MemoryStore) -> None:
        support = scope()
        billing = Scope(support.namespace, "billing")
        s1 = await store.save(support, FACTS[0])
        await store.save(support, FACTS[1])
        s3 = await store.save(support, "Call back the customer.", {"customer": "ann lee"})
        b1 = await store.save(billing, FACTS[3])
        await store.save(billing, "Annual plans renew in January; Leeds office closed.")  # not the subject
        forgotten = await store.forget(Scope(support.namespace, None), subject="Ann  Lee")
        assert sorted(forgotten) == sorted([s1, s3, b1])
        assert all("Ann Lee" not in e["text"] for e in await store.entries(Scope(support.namespace, None)))
        (event,) = self.audit.events
        assert event.data["by"] == "subject" and event.data["count"] == 3
        assert "Ann" not in str(event.to_dict())  # only a hash of the subject is recorded

    async def test_forget_an_agent(self, store: MemoryStore) -> None:
        support = scope()
        billing = Scope(support.namespace, "billing")
        await store.save(support, FACTS[0])
        await store.save(support, FACTS[1])
        kept = await store.save(billing, FACTS[2])
        assert len(await store.forget(support)) == 2
        assert await store.entries(support) == []
        assert [e["id"] for e in await store.entries(billing)] == [kept]
        assert self.audit.events[0].data["by"] == "agent"

    async def test_bad_input_is_refused_with_why(self, store: MemoryStore) -> None:
        where = scope()
        for text, metadata, words in (("", None, "non-empty text"), ("x" * 9000, None, "at most 8000"),
                                      ("ok", {"when": float("nan")}, "JSON object")):
            with pytest.raises(InvalidMemory, match=words):
                await store.save(where, text, metadata)
        with pytest.raises(InvalidMemory, match="k must be"):
            await store.search(where, "q", k=0)
        with pytest.raises(InvalidMemory, match="not a memory id"):
            await store.forget(where, memory_id="nope")
        with pytest.raises(InvalidMemory, match="one Agent"):
            await store.save(Scope(where.namespace, None), "fact")
        with pytest.raises(InvalidMemory, match="letter or digit"):
            await store.forget(where, subject=" .. ")

    async def test_results_are_plain_json(self, store: MemoryStore) -> None:
        import json

        where = scope()
        await store.save(where, FACTS[0], {"tags": ["vip"], "score": 1.5, "nested": {"a": [1, None, True]}})
        hits = await store.search(where, "Ann Lee", k=1)
        entries = await store.entries(where)
        assert json.loads(json.dumps(hits)) == hits and json.loads(json.dumps(entries)) == entries
        assert entries[0]["embeddingModel"] == "agentflow/hashing-v1" and entries[0]["expiresAt"] is None
