"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.postgres import PostgresUnavailable, running_postgres


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN of a real PostgreSQL started for this session (tests/services/postgres.py), stopped at the end."""
    try:
        with running_postgres() as server:
            yield server.dsn
    except PostgresUnavailable as e:
        pytest.skip(f"no PostgreSQL for the integration tests: {e}")
