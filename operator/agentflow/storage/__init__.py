"""Durable state of the operator: run journals, attempt payloads and step results in PostgreSQL.

See :mod:`agentflow.storage.postgres` for the schema, :mod:`.errors` for the error hierarchy,
:mod:`.database` for the one pool the operator and the gateway share, :mod:`.migrations` for the one
routine that creates and upgrades every table. The budget ledger:
:mod:`agentflow.storage.ledger` (contract), :mod:`.budgets` (PostgreSQL), :mod:`.memory_ledger` (one process).

Names are loaded on first use: the step pod and the local runner import modules of this package (the
in-memory ledger, the JSONL audit file) without asyncpg, which only the PostgreSQL modules need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .audit import PostgresAuditLog
    from .budgets import LEDGER_SCHEMA_VERSION, PostgresLedger
    from .database import Database
    from .memory_ledger import MemoryLedger
    from .postgres import (
        SCHEMA_VERSION,
        InvalidValue,
        JournalConflict,
        PostgresStore,
        StorageError,
        StorageUnavailable,
    )

_WHERE = {
    "Database": ".database",
    "PostgresAuditLog": ".audit",
    "LEDGER_SCHEMA_VERSION": ".budgets",
    "PostgresLedger": ".budgets",
    "MemoryLedger": ".memory_ledger",
    "SCHEMA_VERSION": ".postgres",
    "InvalidValue": ".errors",
    "JournalConflict": ".errors",
    "PostgresStore": ".postgres",
    "StorageError": ".errors",
    "StorageUnavailable": ".errors",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where, __name__), name)


__all__ = [
    "LEDGER_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "Database",
    "InvalidValue",
    "JournalConflict",
    "MemoryLedger",
    "PostgresAuditLog",
    "PostgresLedger",
    "PostgresStore",
    "StorageError",
    "StorageUnavailable",
]
