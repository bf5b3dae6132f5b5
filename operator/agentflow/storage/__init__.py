"""Durable state of the operator: run journals, attempt payloads and step results in PostgreSQL.

See :mod:`agentflow.storage.postgres` for the schema and the error hierarchy. The budget ledger:
:mod:`agentflow.storage.ledger` (contract), :mod:`.budgets` (PostgreSQL), :mod:`.memory_ledger` (one process).
"""

from __future__ import annotations

from .budgets import LEDGER_SCHEMA_VERSION, PostgresLedger
from .memory_ledger import MemoryLedger
from .postgres import (
    SCHEMA_VERSION,
    InvalidValue,
    JournalConflict,
    PostgresStore,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "LEDGER_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "InvalidValue",
    "JournalConflict",
    "MemoryLedger",
    "PostgresLedger",
    "PostgresStore",
    "StorageError",
    "StorageUnavailable",
]
