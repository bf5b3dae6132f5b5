"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from services.nats import NatsServer, NatsUnavailable, running_nats
from services.postgres import PostgresUnavailable, running_postgres

# No time limit per example: the machines are shared and noisy, and a test never asserts on timing.
settings.register_profile("agentflow", deadline=None)
settings.load_profile("agentflow")


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


@pytest.fixture(scope="session")
def pgvector_dsn() -> Iterator[str]:
    """DSN of a real PostgreSQL with the pgvector extension, started for this session (tests/services/postgres.py:
    the PyPI package pgserver's PostgreSQL 16 + pgvector, since Debian bookworm has no pgvector package)."""
    try:
        with running_postgres(pgvector=True) as server:
            yield server.dsn
    except PostgresUnavailable as e:
        if os.environ.get("CI"):  # `make services` installs it: never skip there
            pytest.fail(f"no PostgreSQL with pgvector in CI: {e}")
        pytest.skip(f"no PostgreSQL with pgvector for the memory tests: {e}")


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A real nats-server with JetStream for one test (tests/services/nats.py): the test may kill and restart it."""
    try:
        with running_nats() as server:
            yield server
    except NatsUnavailable as e:
        if os.environ.get("CI"):  # CI installs it (Makefile, tests/services/nats.py): never skip there
            pytest.fail(f"no nats-server in CI: {e}")
        pytest.skip(f"no nats-server for this test: {e}")
