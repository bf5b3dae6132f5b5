"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
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
        if os.environ.get("CI"):  # CI installs it (tests/services/postgres.py): never skip there
            pytest.fail(f"no PostgreSQL in CI: {e}")
        pytest.skip(f"no PostgreSQL for the integration tests: {e}")
