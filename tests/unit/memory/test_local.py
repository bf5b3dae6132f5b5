"""Long-term memory of local runs: the MemoryStore contract on SQLite, the offline embedding, the memory tools and
the local runner's past runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentflow.memory import HashingEmbedder
from agentflow.memory.embeddings import cosine, hashing_vector
from agentflow.memory.local import SqliteMemoryStore
from agentflow.testing import MemoryAuditSink

from .contract import Clock, MemoryContract


class TestSqliteStore(MemoryContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteMemoryStore]:
        self.clock, self.audit = Clock(), MemoryAuditSink()
        store = SqliteMemoryStore(tmp_path / "memory.sqlite3", HashingEmbedder(), audit=self.audit, clock=self.clock)
        yield store
        await store.close()

    async def test_two_stores_share_the_file(self, tmp_path: Path) -> None:
        from agentflow.memory import Scope

        path = tmp_path / "memory.sqlite3"
        where = Scope("default", "support")
        one = SqliteMemoryStore(path, HashingEmbedder())
        saved = await one.save(where, "Refunds take five days.")
        other = SqliteMemoryStore(path, HashingEmbedder())
        assert [h["id"] for h in await other.search(where, "refunds", k=1)] == [saved]


class TestHashingEmbedding:
    def test_deterministic_unit_vectors(self) -> None:
        a = hashing_vector("Refunds take five days")
        assert a == hashing_vector("Refunds take five days")
        assert len(a) == 256 and abs(sum(v * v for v in a) - 1) < 1e-9
        assert hashing_vector("...") == [0.0] * 256

    def test_shared_words_and_pieces_are_close_and_unrelated_text_is_not(self) -> None:
        refund = hashing_vector("refund")
        assert cosine(refund, hashing_vector("refunds")) > 0.4
        assert cosine(refund, hashing_vector("the shipping schedule")) < 0.2

    async def test_it_says_what_it_is(self) -> None:
        embedder = HashingEmbedder()
        assert embedder.model == "agentflow/hashing-v1"
        assert await embedder.embed(["a", "b"]) == [hashing_vector("a"), hashing_vector("b")]
