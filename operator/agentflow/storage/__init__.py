"""Durable state of the operator: run journals, attempt payloads and step results in PostgreSQL.

See :mod:`agentflow.storage.postgres` for the schema and the error hierarchy.
"""

from __future__ import annotations

from .postgres import (
    SCHEMA_VERSION,
    InvalidValue,
    JournalConflict,
    PostgresStore,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "SCHEMA_VERSION",
    "InvalidValue",
    "JournalConflict",
    "PostgresStore",
    "StorageError",
    "StorageUnavailable",
]
