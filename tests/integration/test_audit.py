"""The audit chain in a real PostgreSQL: concurrent writers keep one chain; SQL tampering is named; exports verify."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agentflow.audit.chain import EMPTY, Head, event_bytes, link, row_hash
from agentflow.audit.events import AuditEventError
from agentflow.audit.records import AuditEvent
from agentflow.storage import StorageError
from agentflow.storage.audit import PostgresAuditLog

pytestmark = pytest.mark.integration


def event(i: int, namespace: str = "team-a", writer: int = 0) -> AuditEvent:
    return AuditEvent(
        kind="model_call",
        actor=f"gateway-{writer}",
        namespace=namespace,
        subject=f"{namespace}/triage/classify#{i}",
        decision="allow",
        at="2026-01-02T03:04:05.123456Z",
        data={"model": "gpt-x", "inputTokens": i, "costUsd": 1e-05 * i, "big": 1e16, "neg": -0.0, "text": "é\u0000x"},
    )


@pytest.fixture
def audit_dsn(own_dsn: str) -> str:
    """A database of its own: the audit chain is one per database."""
    return own_dsn


@pytest.fixture
async def log(audit_dsn: str) -> AsyncIterator[PostgresAuditLog]:
    log = await PostgresAuditLog.connect(audit_dsn)
    try:
        await log.migrate()
        await log.migrate()  # idempotent
        yield log
    finally:
        await log.close()


async def filled(log: PostgresAuditLog, n: int = 30) -> None:
    await log.append([event(i) for i in range(n)])


async def sql(dsn: str, *statements: str, args: tuple[Any, ...] = ()) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for s in statements:
                await conn.execute(s, *args) if args else await conn.execute(s)
    finally:
        await conn.close()


async def problem(log: PostgresAuditLog, expect_head: Head | None = None) -> tuple[str, tuple[int, ...], str]:
    report = await log.verify(expect_head)
    assert not report.ok, report
    assert report.problem is not None
    return report.problem.kind, report.problem.seqs, report.problem.message


# --------------------------------------------------------------------------- writing


async def test_concurrent_writers_with_separate_pools_keep_one_chain(log: PostgresAuditLog, audit_dsn: str) -> None:
    writers = [await PostgresAuditLog.connect(audit_dsn, max_size=2) for _ in range(4)]

    async def write(w: int, sink: PostgresAuditLog) -> None:
        for b in range(15):
            await sink.append([event(b * 10 + k, writer=w) for k in range(1 + (b + w) % 3)])

    try:
        await asyncio.gather(*(write(w, s) for w, s in enumerate(writers)))
    finally:
        for s in writers:
            await s.close()
    expected = sum(1 + (b + w) % 3 for w in range(4) for b in range(15))
    report = await log.verify()
    assert report.ok, report
    assert report.checked == expected
    assert report.head == await log.head()
    rows = await log.rows(0, limit=10_000)
    assert [r["seq"] for r in rows] == list(range(expected))
    # a batch is appended whole: event k > 0 of a batch follows event k - 1 of the same writer's batch
    for before, row in itertools.pairwise(rows):
        if row["data"]["inputTokens"] % 10:
            assert (before["actor"], before["data"]["inputTokens"]) == (row["actor"], row["data"]["inputTokens"] - 1)


async def test_rows_read_back_exactly_as_hashed(log: PostgresAuditLog) -> None:
    await filled(log, 3)
    rows = await log.rows()
    assert rows[1]["data"] == event(1).to_dict()["data"]
    assert repr(rows[1]["data"]["neg"]) == "-0.0" and rows[1]["data"]["big"] == 1e16
    assert rows[1]["hash"] == row_hash(rows[1]["prev_hash"], event_bytes(rows[1]))
    assert (await log.rows(2, limit=5))[0]["seq"] == 2


async def test_invalid_events_are_refused_before_anything_is_written(log: PostgresAuditLog) -> None:
    bad = AuditEvent("model_call", "gw", "ns", "s", "allow", "yesterday", {})
    with pytest.raises(AuditEventError, match=r"events\[1\].at"):
        await log.append([event(0), bad])
    assert await log.head() == EMPTY


async def test_unmigrated_database_says_so(audit_dsn: str) -> None:
    async with await PostgresAuditLog.connect(audit_dsn) as fresh:
        with pytest.raises(StorageError, match=r"PostgresAuditLog.migrate\(\)"):
            await fresh.append([event(0)])


# --------------------------------------------------------------------------- tampering with SQL


async def test_update_data_is_a_modified_row(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    await sql(audit_dsn, """UPDATE agentflow_audit SET data = '{"model": "cheap"}' WHERE seq = 17""")
    assert await problem(log) == ("modified", (17,), "row 17 was modified (its hash does not match its contents)")


async def test_update_decision_with_recomputed_hash(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    rows = await log.rows()
    forged = {**rows[17], "decision": "deny"}
    digest = row_hash(forged["prev_hash"], event_bytes(forged))
    await sql(audit_dsn, "UPDATE agentflow_audit SET decision = 'deny', hash = $1 WHERE seq = 17", args=(digest,))
    kind, seqs, message = await problem(log)
    assert (kind, seqs) == ("modified", (17,)) and "hash recomputed" in message


async def test_delete_is_a_deleted_row(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    await sql(audit_dsn, "DELETE FROM agentflow_audit WHERE seq = 17")
    assert await problem(log) == ("deleted", (17,), "row 17 was deleted (a row between 16 and 18 is missing)")


async def test_delete_of_the_tail(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    anchor = await log.head()
    await sql(audit_dsn, "DELETE FROM agentflow_audit WHERE seq >= 27")
    kind, seqs, message = await problem(log)
    assert (kind, seqs) == ("deleted", (27, 28, 29)) and "head record says row 29" in message
    # even with the head record fixed up, the anchor kept elsewhere tells
    rows = await log.rows()
    await sql(audit_dsn, "UPDATE agentflow_audit_head SET seq = 26, hash = $1", args=(rows[-1]["hash"],))
    assert (await log.verify()).ok
    kind, _, message = await problem(log, anchor)
    assert kind == "deleted" and "rows 27..29 were deleted from the end" in message


async def test_insert_of_a_forged_row_with_a_plausible_hash(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    rows = await log.rows()
    forged = link(Head(8, rows[8]["hash"]), [event(999)])[0]
    e = forged.event
    await sql(
        audit_dsn,
        "UPDATE agentflow_audit SET seq = seq + 1000000 WHERE seq >= 9",
        "UPDATE agentflow_audit SET seq = seq - 999999 WHERE seq >= 1000000",  # seq + 1
        "INSERT INTO agentflow_audit (seq, at, kind, actor, namespace, subject, decision, data, prev_hash, hash) "
        f"VALUES (9, '{e.at}', '{e.kind}', '{e.actor}', '{e.namespace}', '{e.subject}', '{e.decision}', "
        f"'{json.dumps(dict(e.data))}', '{forged.prev_hash}', '{forged.hash}')",
        "UPDATE agentflow_audit_head SET seq = seq + 1",
    )
    assert await problem(log) == ("inserted", (9,), "row 9 was inserted: row 10 links past it to row 8")


async def test_insert_past_the_head(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    head = await log.head()
    forged = link(head, [event(999)])[0]
    e = forged.event
    await sql(
        audit_dsn,
        "INSERT INTO agentflow_audit (seq, at, kind, actor, namespace, subject, decision, data, prev_hash, hash) "
        f"VALUES ({forged.seq}, '{e.at}', '{e.kind}', '{e.actor}', '{e.namespace}', '{e.subject}', "
        f"'{e.decision}', '{json.dumps(dict(e.data))}', '{forged.prev_hash}', '{forged.hash}')",
    )
    kind, seqs, message = await problem(log)
    assert (kind, seqs) == ("inserted", (30,)) and "appended outside AgentFlow" in message
    with pytest.raises(StorageError, match="inserted outside AgentFlow"):
        await log.append([event(1)])


async def test_swapped_seqs_are_out_of_order(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    await sql(
        audit_dsn,
        "UPDATE agentflow_audit SET seq = 1000000 WHERE seq = 5",
        "UPDATE agentflow_audit SET seq = 5 WHERE seq = 6",
        "UPDATE agentflow_audit SET seq = 6 WHERE seq = 1000000",
    )
    assert await problem(log) == ("reordered", (5, 6), "rows 5 and 6 are out of order (swapped)")


async def test_rewritten_tail_is_caught_by_the_anchor(log: PostgresAuditLog, audit_dsn: str) -> None:
    await filled(log)
    anchor = await log.head()
    rows = await log.rows()
    rows[12]["decision"] = "deny"
    prev = rows[11]["hash"]
    for r in rows[12:]:
        r["prev_hash"], r["hash"] = prev, row_hash(prev, event_bytes(r))
        prev = r["hash"]
        await sql(audit_dsn, "UPDATE agentflow_audit SET decision = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
                  args=(r["decision"], r["prev_hash"], r["hash"], r["seq"]))
    await sql(audit_dsn, "UPDATE agentflow_audit_head SET hash = $1", args=(prev,))
    assert (await log.verify()).ok  # what hashes alone cannot see
    kind, seqs, _ = await problem(log, anchor)
    assert (kind, seqs) == ("anchor", (29,))


# --------------------------------------------------------------------------- the CLI


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "audit", *args], capture_output=True, text=True, timeout=60
    )


async def test_cli_verify_export_and_verify_the_file(log: PostgresAuditLog, audit_dsn: str, tmp_path: Path) -> None:
    await log.append([event(i, "team-a" if i % 3 else "team-b") for i in range(40)])
    ok = await asyncio.to_thread(cli, "verify", "--postgres-dsn", audit_dsn)
    assert ok.returncode == 0, ok.stderr
    head = await log.head()
    assert "audit chain intact: 40 rows verified" in ok.stdout and f"head: {head}" in ok.stdout

    out = tmp_path / "audit.jsonl"
    exported = await asyncio.to_thread(cli, "export", "--postgres-dsn", audit_dsn, "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(out.read_text().splitlines()) == 40
    assert json.loads((tmp_path / "audit.jsonl.head.json").read_text())["head"] == str(head)
    file_ok = await asyncio.to_thread(cli, "verify", "--file", str(out), "--expect-head", f"@{out}.head.json")
    assert file_ok.returncode == 0, file_ok.stdout + file_ok.stderr

    csv_out = tmp_path / "audit.csv"
    r = await asyncio.to_thread(cli, "export", "--postgres-dsn", audit_dsn, "--format", "csv", "-o", str(csv_out),
                                "--since", "10")
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(cli, "verify", "--file", str(csv_out), "--since", "10", "--expect-head", str(head))
    assert r.returncode == 0, r.stdout + r.stderr

    ns_out = tmp_path / "team-b.jsonl"
    r = await asyncio.to_thread(cli, "export", "--postgres-dsn", audit_dsn, "--namespace", "team-b", "-o", str(ns_out))
    assert r.returncode == 0 and len(ns_out.read_text().splitlines()) == 14
    r = await asyncio.to_thread(cli, "verify", "--file", str(ns_out), "--namespace", "team-b")
    assert r.returncode == 0, r.stdout + r.stderr

    lines = out.read_text().splitlines()
    del lines[17]
    (tmp_path / "cut.jsonl").write_text("\n".join(lines) + "\n")
    cut = await asyncio.to_thread(cli, "verify", "--file", str(tmp_path / "cut.jsonl"), "--json")
    assert cut.returncode == 1
    report = json.loads(cut.stdout)
    assert report["problem"]["message"] == "row 17 was deleted (a row between 16 and 18 is missing)"

    await sql(audit_dsn, """UPDATE agentflow_audit SET data = '{"x": 1}' WHERE seq = 33""")
    bad = await asyncio.to_thread(cli, "verify", "--postgres-dsn", audit_dsn)
    assert bad.returncode == 1 and "row 33 was modified" in bad.stdout


async def test_cli_unreachable_database_is_exit_2() -> None:
    r = await asyncio.to_thread(cli, "verify", "--postgres-dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "agentflow audit verify: connect: PostgreSQL at postgresql://nobody@127.0.0.1:1/none" in r.stderr
