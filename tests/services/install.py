"""Install the servers the tests start (Debian's postgresql and nats-server, PostgreSQL with pgvector from the PyPI
package pgserver) before any test runs.

``python tests/services/install.py`` (``make services``, which ``make test`` and CI run first): each is found or
installed with apt-get (as root), pgserver with the pip of $AGENTFLOW_TEST_PYTHON (the venv the tests run in).
Where that is not possible it says so and what to run; with ``CI`` set that is an error (exit 1), so CI never
skips a test for a missing server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.nats import NatsUnavailable, find_nats_server, install_nats_server
from services.postgres import (
    PostgresUnavailable,
    find_bin_dir,
    find_pgvector_bin_dir,
    install_pgvector,
    install_postgres,
)

TEST_PYTHON = os.environ.get("AGENTFLOW_TEST_PYTHON") or None
"""The interpreter the tests run with (make services: the project's venv): pgserver is installed there."""


def main() -> int:
    missing = []
    for name, find, install, unavailable in (
        ("PostgreSQL", find_bin_dir, install_postgres, PostgresUnavailable),
        ("nats-server", find_nats_server, install_nats_server, NatsUnavailable),
        ("PostgreSQL with pgvector", lambda: find_pgvector_bin_dir(TEST_PYTHON),
         lambda: install_pgvector(TEST_PYTHON), PostgresUnavailable),
    ):
        found = find()
        if found is None:
            try:
                found = install()
            except unavailable as exc:
                missing.append(f"{name}: {exc}")
                continue
        print(f"services: {name} at {found}")
    for problem in missing:
        print(f"services: {problem}", file=sys.stderr)
    return 1 if missing and os.environ.get("CI") else 0


if __name__ == "__main__":
    sys.exit(main())
