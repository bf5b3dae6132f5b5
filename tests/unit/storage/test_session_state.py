"""The contract that lets the pools skip asyncpg's reset query on release (agentflow.storage.postgres.keep_session):
no SQL in the product leaves session state behind a released connection."""

from __future__ import annotations

import re
from pathlib import Path

import agentflow
from agentflow.storage import postgres

SOURCE = Path(agentflow.__file__).parent
SESSION_STATE = [
    (re.compile(r"""["';]\s*SET\s+(?!LOCAL\b)(?:SESSION\s+)?[A-Za-z_.]+\s*(?:=|TO)\s"""), "a session-level SET"),
    (re.compile(r"pg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.I), "a session-level advisory lock"),
    (re.compile(r"set_config\s*\([^)]*false", re.I), "set_config(..., false)"),
    (re.compile(r"CREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\s+TABLE", re.I), "a temporary table"),
    (re.compile(r"""["']\s*LISTEN\s+[A-Za-z_"][\w"]*\s*;?\s*["']"""),
     "a LISTEN statement (use add_listener/remove_listener)"),
]


def test_no_sql_leaves_session_state_on_a_pooled_connection() -> None:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text()
        for pattern, what in SESSION_STATE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(SOURCE)}:{line}: {what}: {match.group(0).strip()!r}")
    assert found == [], "\n".join(found)


def test_the_patterns_see_what_they_forbid() -> None:
    samples = {'"SET statement_timeout = 0"': 0, "'SET search_path TO x'": 0, '"SELECT pg_advisory_lock(1)"': 1,
               "set_config('a', 'b', false)": 2, '"CREATE TEMP TABLE t (x int)"': 3, '"LISTEN chan"': 4,
               '"SET application_name TO x"': 0}
    for sample, index in samples.items():
        assert SESSION_STATE[index][0].search(sample), sample
    for allowed in ('"SET LOCAL idle_in_transaction_session_timeout = 5"', '"SELECT pg_advisory_xact_lock($1)"',
                    '"UPDATE t SET seq = $1"', "set_config('a', 'b', true)",
                    '"Listen on host:port"', '"""LISTEN until stopped', '"Set to true to cancel"'):
        assert not any(p.search(allowed) for p, _ in SESSION_STATE), allowed


def test_pools_release_connections_without_the_reset_query() -> None:
    import inspect

    assert "reset=keep_session" in inspect.getsource(postgres.open_pool)
