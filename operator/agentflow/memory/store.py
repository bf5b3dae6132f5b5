"""The long-term memory contract every store keeps, and the audit of erasure.

::

    id = await store.save(scope, text, metadata, ttl_seconds=None)      # the fact's id (a UUID string)
    hits = await store.search(scope, query, k=5, token_budget=800)      # list[MemoryHit], best first
    ids = await store.forget(scope, memory_id=ID)                       # that fact (MemoryNotFound if none)
    ids = await store.forget(scope, subject="Ann Lee")                  # every fact mentioning the subject
    ids = await store.forget(scope)                                     # every fact of the scope (an Agent,
                                                                        #  or with agent None the namespace)
    entries = await store.entries(scope, limit=100)                     # list[MemoryEntry], newest first
    await store.close()

Every value in and out is plain JSON (dicts, lists, strings, numbers), so the agent loop can journal what it
read and replay returns it without asking the store again. A search embeds the query with the store's embedder
and compares it with the facts saved with the same embedding model only; expired facts (``ttl_seconds`` past)
are never returned and are deleted by the next save or forget of the scope. ``forget`` appends one
``memory_forget`` event to the audit chain when the store has an AuditSink (who, the scope, how many, their ids;
the subject only as its SHA-256, never in clear), before it returns; an erasure that cannot be recorded fails.

Stores: :class:`agentflow.memory.local.SqliteMemoryStore` (local runs: the state dir, no server) and
:class:`agentflow.memory.postgres.PostgresMemoryStore` (PostgreSQL with pgvector).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from agentflow.audit.records import AuditEvent, AuditSink

from .records import MemoryEntry, MemoryHit, MemoryUnavailable, Scope

__all__ = ["MemoryStore", "forget_event", "record_forget"]


class MemoryStore(Protocol):
    async def save(self, scope: Scope, text: str, metadata: dict[str, Any] | None = None, *,
                   ttl_seconds: float | None = None) -> str: ...

    async def search(self, scope: Scope, query: str, k: int = 5,
                     token_budget: int | None = None) -> list[MemoryHit]: ...

    async def forget(self, scope: Scope, *, memory_id: str | None = None, subject: str | None = None,
                     actor: str = "agent") -> list[str]: ...

    async def entries(self, scope: Scope, *, limit: int = 100) -> list[MemoryEntry]: ...

    async def close(self) -> None: ...


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat().replace("+00:00", "Z")


def forget_event(scope: Scope, ids: Sequence[str], *, actor: str, at: float, memory_id: str | None,
                 subject: str | None) -> AuditEvent:
    """The audit event of one erasure: never the subject or a fact's text, only counts, ids and a hash."""
    by = "id" if memory_id is not None else "subject" if subject is not None else "agent" if scope.agent else \
        "namespace"
    data: dict[str, Any] = {"by": by, "agent": scope.agent, "count": len(ids), "ids": list(ids[:200])}
    if subject is not None:
        data["subjectSha256"] = hashlib.sha256(subject.strip().lower().encode("utf-8")).hexdigest()
    return AuditEvent("memory_forget", actor, scope.namespace, str(scope), "ok", _iso(at), data)


async def record_forget(audit: AuditSink | None, event: AuditEvent) -> None:
    if audit is None:
        return
    try:
        await audit.append([event])
    except Exception as exc:
        raise MemoryUnavailable(f"the erasure in {event.subject} happened but could not be recorded in the audit "
                                f"chain: {exc}; run it again (forgetting twice is harmless)") from exc
