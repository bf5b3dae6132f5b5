"""Long-term memory in PostgreSQL with pgvector: the cluster's store (the operator's database, or any other).

::

    store = await PostgresMemoryStore.connect(dsn, embedder, audit=...)   # its own small pool
    await store.migrate()       # CREATE EXTENSION vector + the table, idempotent; MemoryUnavailable naming
                                # pgvector when the server does not have it
    ... the MemoryStore contract (agentflow.memory.store) ...
    await store.close()

One table, ``agentflow_memories``: id (uuid), namespace, agent, text, metadata (jsonb), embedding (``vector``,
any dimension: facts of several embedding models can live side by side), embedding_model, created_at,
expires_at (timestamptz). A search is an exact nearest-neighbour query by cosine distance (pgvector's ``<=>``)
over the rows of one (namespace, Agent, embedding model), found through a btree index on those three: exact,
and the right plan for the thousands of facts an agent keeps. An HNSW index needs a fixed dimension per index;
add one per model (``CREATE INDEX ... USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE
embedding_model = '...'``) when an agent keeps hundreds of thousands. Times come from the store's clock (the
same one as the local store's), so expiry is the same everywhere and testable.

This is the one module outside agentflow.storage that talks to PostgreSQL (.importlinter says so): memory is not
part of the operator's schema (agentflow.storage.migrations), because it needs an extension the journal does not.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from agentflow.audit.records import AuditSink
from agentflow.storage.errors import StorageError
from agentflow.storage.postgres import open_pool

from .embeddings import Embedder, vector_text
from .local import embed_one
from .records import (
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
    subject_like,
    within_budget,
)
from .store import forget_event, record_forget

__all__ = ["SCHEMA", "PostgresMemoryStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS agentflow_memories (
    id uuid PRIMARY KEY,
    namespace text NOT NULL,
    agent text NOT NULL,
    text text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding vector NOT NULL,
    embedding_model text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz
);
CREATE INDEX IF NOT EXISTS agentflow_memories_scope ON agentflow_memories (namespace, agent, embedding_model);
"""
_LOCK = 0x6166_6d65_6d00  # "afmem": one migration at a time

_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def _seconds(value: datetime.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class PostgresMemoryStore:
    """A MemoryStore in PostgreSQL with pgvector (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, embedder: Embedder, *, where: str = "PostgreSQL",
                 audit: AuditSink | None = None, clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.embedder = embedder
        self.where = where
        self.audit = audit
        self.clock = clock

    @classmethod
    async def connect(cls, dsn: str, embedder: Embedder, *, audit: AuditSink | None = None,
                      clock: Callable[[], float] = time.time, max_size: int = 4,
                      timeout: float = 10.0) -> PostgresMemoryStore:
        try:
            pool, where = await open_pool(dsn, "agentflow-memory", "connect to the memory store", min_size=1,
                                          max_size=max_size, timeout=timeout)
        except StorageError as exc:
            raise MemoryUnavailable(str(exc)) from exc
        return cls(pool, embedder, where=where, audit=audit, clock=clock)

    def _failed(self, exc: BaseException, doing: str) -> MemoryUnavailable:
        return MemoryUnavailable(f"memory store at {self.where}: cannot {doing}: {type(exc).__name__}: {exc}")

    async def migrate(self) -> None:
        """The pgvector extension and the table (idempotent; concurrent callers wait for each other)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                try:
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except (asyncpg.FeatureNotSupportedError, asyncpg.UndefinedFileError,
                        asyncpg.InsufficientPrivilegeError) as exc:
                    raise MemoryUnavailable(
                        f"memory store at {self.where}: the pgvector extension is not available ({exc}); install "
                        "pgvector on the server (or use one that ships it) and let a superuser run CREATE EXTENSION "
                        "vector once") from exc
                await conn.execute(SCHEMA)
        except MemoryUnavailable:
            raise
        except _ERRORS as exc:
            raise self._failed(exc, "create its table") from exc

    async def save(self, scope: Scope, text: str, metadata: dict[str, Any] | None = None, *,
                   ttl_seconds: float | None = None) -> str:
        agent = scope.one_agent()
        text, metadata = check_memory(text, metadata)
        vector = vector_text(await embed_one(self.embedder, text))
        now = self.clock()
        memory_id = new_id()
        expires = _at(now + ttl_seconds) if ttl_seconds is not None else None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._purge(conn, scope, now)
                await conn.execute(
                    "INSERT INTO agentflow_memories (id, namespace, agent, text, metadata, embedding, embedding_model,"
                    " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6::vector, $7, $8, $9)",
                    memory_id, scope.namespace, agent, text, metadata, vector, self.embedder.model, _at(now), expires)
        except _ERRORS as exc:
            raise self._failed(exc, "save a memory") from exc
        return memory_id

    async def search(self, scope: Scope, query: str, k: int = 5,
                     token_budget: int | None = None) -> list[MemoryHit]:
        agent = scope.one_agent()
        query, k, token_budget = check_search(query, k, token_budget)
        vector = vector_text(await embed_one(self.embedder, query))
        try:
            rows = await self.pool.fetch(
                "SELECT id::text AS id, text, metadata, created_at, 1 - (embedding <=> $4::vector) AS score "
                "FROM agentflow_memories WHERE namespace = $1 AND agent = $2 AND embedding_model = $3 "
                "AND (expires_at IS NULL OR expires_at > $5) ORDER BY embedding <=> $4::vector, created_at DESC "
                "LIMIT $6", scope.namespace, agent, self.embedder.model, vector, _at(self.clock()), k)
        except _ERRORS as exc:
            raise self._failed(exc, "search memories") from exc
        hits: list[MemoryHit] = [
            {"id": r["id"], "text": r["text"], "metadata": dict(r["metadata"]), "score": round(float(r["score"]), 6),
             "createdAt": r["created_at"].timestamp(), "tokens": approximate_tokens(r["text"])} for r in rows]
        return within_budget(hits, token_budget)

    async def forget(self, scope: Scope, *, memory_id: str | None = None, subject: str | None = None,
                     actor: str = "agent") -> list[str]:
        if memory_id is not None and subject is not None:
            raise ValueError("forget takes a memory_id or a subject, not both")
        wanted = check_id(memory_id) if memory_id is not None else None
        subject = check_subject(subject) if subject is not None else None
        like = subject_like(subject) if subject is not None else None
        now = self.clock()
        where, args = _scope_sql(scope)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._purge(conn, scope, now)
                if wanted is not None:
                    rows = await conn.fetch(f"SELECT id::text AS id FROM agentflow_memories WHERE {where} AND "
                                            f"id = ${len(args) + 1}::uuid FOR UPDATE", *args, wanted)
                    if not rows:
                        raise MemoryNotFound(f"no memory {wanted} in {scope}")
                    ids = [r["id"] for r in rows]
                elif like is not None and subject is not None:
                    candidates = await conn.fetch(
                        f"SELECT id::text AS id, text, metadata FROM agentflow_memories WHERE {where} AND "
                        f"(text ILIKE ${len(args) + 1} OR metadata::text ILIKE ${len(args) + 1}) FOR UPDATE",
                        *args, like)
                    ids = [r["id"] for r in candidates if mentions(subject, r["text"], dict(r["metadata"]))]
                else:
                    ids = [r["id"] for r in await conn.fetch(
                        f"SELECT id::text AS id FROM agentflow_memories WHERE {where} FOR UPDATE", *args)]
                ids.sort()
                await conn.execute("DELETE FROM agentflow_memories WHERE id = ANY($1::uuid[])", ids)
        except (MemoryNotFound, MemoryUnavailable):
            raise
        except _ERRORS as exc:
            raise self._failed(exc, "forget memories") from exc
        await record_forget(self.audit, forget_event(scope, ids, actor=actor, at=now, memory_id=wanted,
                                                     subject=subject))
        return ids

    async def entries(self, scope: Scope, *, limit: int = 100) -> list[MemoryEntry]:
        where, args = _scope_sql(scope)
        n = len(args)
        try:
            rows = await self.pool.fetch(
                f"SELECT id::text AS id, namespace, agent, text, metadata, created_at, expires_at, embedding_model "
                f"FROM agentflow_memories WHERE {where} AND (expires_at IS NULL OR expires_at > ${n + 1}) "
                f"ORDER BY created_at DESC, id LIMIT ${n + 2}", *args, _at(self.clock()), limit)
        except _ERRORS as exc:
            raise self._failed(exc, "list memories") from exc
        return [{"id": r["id"], "namespace": r["namespace"], "agent": r["agent"], "text": r["text"],
                 "metadata": dict(r["metadata"]), "createdAt": r["created_at"].timestamp(),
                 "expiresAt": _seconds(r["expires_at"]), "embeddingModel": r["embedding_model"]} for r in rows]

    async def close(self) -> None:
        await self.pool.close()

    @staticmethod
    async def _purge(conn: Any, scope: Scope, now: float) -> None:
        where, args = _scope_sql(scope)
        await conn.execute(f"DELETE FROM agentflow_memories WHERE {where} AND expires_at IS NOT NULL AND "
                           f"expires_at <= ${len(args) + 1}", *args, _at(now))


def _scope_sql(scope: Scope) -> tuple[str, tuple[str, ...]]:
    if scope.agent is None:
        return "namespace = $1", (scope.namespace,)
    return "namespace = $1 AND agent = $2", (scope.namespace, scope.agent)

