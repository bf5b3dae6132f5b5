"""The local runner's long-term memory: one SQLite file in the state dir, brute-force cosine, no server.

``SqliteMemoryStore(path, embedder)`` keeps every fact of every namespace and Agent in ``path``
(``.agentflow/memory.sqlite3`` by default: :func:`default_path`), vectors as float32 blobs. A search reads the
scope's facts of the embedder's model and ranks them all by cosine similarity in Python: exact, and fast
enough for what one developer's agents remember (about 20 ms for 10,000 facts of 256 dimensions on one core);
PostgreSQL with pgvector is the store for more. SQLite calls run in a worker thread; the file is opened per
operation, so several processes (a run and `agentflow memory`) may share it (SQLite's own locking).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentflow.audit.records import AuditSink

from .embeddings import Embedder, cosine
from .records import (
    EmbeddingError,
    MemoryEntry,
    MemoryHit,
    MemoryNotFound,
    MemoryUnavailable,
    Scope,
    approximate_tokens,
    check_id,
    check_memory,
    check_search,
    check_subject,
    mentions,
    new_id,
    within_budget,
)
from .store import forget_event, record_forget

__all__ = ["SqliteMemoryStore", "default_path"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    agent TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedding BLOB NOT NULL,
    embedding_model TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS memories_scope ON memories (namespace, agent, embedding_model);
"""


def default_path(state_dir: Path) -> Path:
    return state_dir / "memory.sqlite3"


async def embed_one(embedder: Embedder, text: str) -> list[float]:
    try:
        (vector,) = await embedder.embed([text])
    except EmbeddingError:
        raise
    except ValueError as exc:  # the embedder returned a different number of vectors
        raise EmbeddingError(f"the embedder {embedder.model} returned no single vector: {exc}") from exc
    return vector


class SqliteMemoryStore:
    """A MemoryStore in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, embedder: Embedder, *, audit: AuditSink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.embedder = embedder
        self.audit = audit
        self.clock = clock

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise MemoryUnavailable(f"cannot open the memory file {self.path}: {exc}") from exc
        try:
            conn.executescript(SCHEMA)
            with conn:
                yield conn
        except sqlite3.Error as exc:
            raise MemoryUnavailable(f"the memory file {self.path}: {exc}") from exc
        finally:
            conn.close()

    async def save(self, scope: Scope, text: str, metadata: dict[str, Any] | None = None, *,
                   ttl_seconds: float | None = None) -> str:
        agent = scope.one_agent()
        text, metadata = check_memory(text, metadata)
        vector = await embed_one(self.embedder, text)
        now = self.clock()
        memory_id = new_id()
        expires = now + ttl_seconds if ttl_seconds is not None else None
        blob = array.array("f", vector).tobytes()

        def write() -> None:
            with self._db() as db:
                self._purge(db, scope, now)
                db.execute("INSERT INTO memories VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (memory_id, scope.namespace, agent, text, json.dumps(metadata), blob,
                            self.embedder.model, now, expires))

        await asyncio.to_thread(write)
        return memory_id

    async def search(self, scope: Scope, query: str, k: int = 5,
                     token_budget: int | None = None) -> list[MemoryHit]:
        agent = scope.one_agent()
        query, k, token_budget = check_search(query, k, token_budget)
        vector = await embed_one(self.embedder, query)
        now = self.clock()

        def read() -> list[tuple[Any, ...]]:
            with self._db() as db:
                return db.execute("SELECT id, text, metadata, embedding, created_at FROM memories WHERE namespace = ? "
                                  "AND agent = ? AND embedding_model = ? AND (expires_at IS NULL OR expires_at > ?)",
                                  (scope.namespace, agent, self.embedder.model, now)).fetchall()

        rows = await asyncio.to_thread(read)
        scored = []
        for memory_id, text, metadata, blob, created in rows:
            stored = array.array("f")
            stored.frombytes(blob)
            scored.append((cosine(vector, stored), created, memory_id, text, metadata))
        scored.sort(key=lambda r: (-r[0], -r[1], r[2]))
        hits: list[MemoryHit] = [
            {"id": memory_id, "text": text, "metadata": json.loads(metadata), "score": round(score, 6),
             "createdAt": created, "tokens": approximate_tokens(text)}
            for score, created, memory_id, text, metadata in scored[:k]]
        return within_budget(hits, token_budget)

    async def forget(self, scope: Scope, *, memory_id: str | None = None, subject: str | None = None,
                     actor: str = "agent") -> list[str]:
        if memory_id is not None and subject is not None:
            raise ValueError("forget takes a memory_id or a subject, not both")
        wanted = check_id(memory_id) if memory_id is not None else None
        subject = check_subject(subject) if subject is not None else None
        now = self.clock()

        def delete() -> list[str]:
            with self._db() as db:
                self._purge(db, scope, now)
                where, args = _scope_sql(scope)
                if wanted is not None:
                    rows = db.execute(f"SELECT id, text, metadata FROM memories WHERE {where} AND id = ?",
                                      (*args, wanted)).fetchall()
                    if not rows:
                        raise MemoryNotFound(f"no memory {wanted} in {scope}")
                elif subject is not None:
                    rows = [r for r in db.execute(f"SELECT id, text, metadata FROM memories WHERE {where}", args)
                            if mentions(subject, r[1], json.loads(r[2]))]
                else:
                    rows = db.execute(f"SELECT id, text, metadata FROM memories WHERE {where}", args).fetchall()
                ids = sorted(r[0] for r in rows)
                db.executemany("DELETE FROM memories WHERE id = ?", [(i,) for i in ids])
                return ids

        ids = await asyncio.to_thread(delete)
        await record_forget(self.audit, forget_event(scope, ids, actor=actor, at=now, memory_id=wanted,
                                                     subject=subject))
        return ids

    async def entries(self, scope: Scope, *, limit: int = 100) -> list[MemoryEntry]:
        now = self.clock()

        def read() -> list[tuple[Any, ...]]:
            with self._db() as db:
                where, args = _scope_sql(scope)
                return db.execute(f"SELECT id, namespace, agent, text, metadata, created_at, expires_at, "
                                  f"embedding_model FROM memories WHERE {where} AND (expires_at IS NULL OR "
                                  f"expires_at > ?) ORDER BY created_at DESC, id LIMIT ?",
                                  (*args, now, limit)).fetchall()

        return [{"id": r[0], "namespace": r[1], "agent": r[2], "text": r[3], "metadata": json.loads(r[4]),
                 "createdAt": r[5], "expiresAt": r[6], "embeddingModel": r[7]}
                for r in await asyncio.to_thread(read)]

    async def close(self) -> None:
        return None

    @staticmethod
    def _purge(db: sqlite3.Connection, scope: Scope, now: float) -> None:
        where, args = _scope_sql(scope)
        db.execute(f"DELETE FROM memories WHERE {where} AND expires_at IS NOT NULL AND expires_at <= ?",
                   (*args, now))


def _scope_sql(scope: Scope) -> tuple[str, tuple[str, ...]]:
    if scope.agent is None:
        return "namespace = ?", (scope.namespace,)
    return "namespace = ? AND agent = ?", (scope.namespace, scope.agent)
