"""Schema migrations of every AgentFlow table, run by one routine.

Each component declares its :class:`Schema` (the journal and step results, the budget ledger, the audit
chain): a version table and numbered migrations, plus an optional ``finish`` step run after them in the
same transaction. :func:`migrate` applies the pending ones of the schemas given, all in one transaction
under one advisory lock, so concurrent operators and gateways starting together wait for each other and
never see half a schema. A database newer than this code (a version above the last known) is refused with
a StorageError that says to upgrade.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .errors import StorageError

__all__ = ["MIGRATION_LOCK", "Migration", "Schema", "migrate"]

MIGRATION_LOCK = 0x61676E74666C6F77  # "agntflow"

Migration = tuple[int, str, tuple[str, ...]]
"""(version, description, SQL statements)."""


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    version_table: str
    migrations: tuple[Migration, ...]
    finish: Callable[[Any], Awaitable[None]] | None = None
    """Run after the migrations, in the same transaction (e.g. seed a row)."""

    @property
    def version(self) -> int:
        return self.migrations[-1][0]


async def migrate(conn: Any, schemas: Sequence[Schema], where: str) -> None:
    """Apply the pending migrations of ``schemas`` on ``conn`` (an asyncpg connection, in a transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    for schema in schemas:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema.version_table} (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {schema.version_table}")
        if current > schema.version:
            raise StorageError(
                f"migrate the {schema.name} schema: the database at {where} has {schema.name} schema version "
                f"{current}, newer than this AgentFlow knows ({schema.version}): upgrade the operator and gateway"
            )
        for version, description, statements in schema.migrations:
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(f"INSERT INTO {schema.version_table} (version, description) VALUES ($1, $2)",
                               version, description)
        if schema.finish is not None:
            await schema.finish(conn)
