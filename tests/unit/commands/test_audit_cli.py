"""`agentflow audit`: flags, exit codes and file verification (no database: the PostgreSQL side is in
tests/integration/test_audit.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentflow.audit.files import csv_header, csv_line, read_rows
from agentflow.audit.records import AuditEvent
from agentflow.cli import main as agentflow
from agentflow.commands.audit import main
from agentflow.storage.audit_file import JsonlAuditLog


def event(i: int) -> AuditEvent:
    return AuditEvent("approval", "user:alice", "team-a" if i % 2 else "team-b", f"ns/wf#{i}", "approved",
                      "2026-01-02T03:04:05Z", {"i": i})


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    asyncio.run(JsonlAuditLog(path).append([event(i) for i in range(20)]))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_an_intact_file_prints_its_head(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--file", str(chain_file))
    head = JsonlAuditLog(chain_file).head()
    assert code == 0 and "audit chain intact: 20 rows verified" in out and f"head: {head}" in out
    assert "--expect-head" in out
    code, out, _ = run(capsys, "verify", "--file", str(chain_file), "--expect-head", str(head), "--json")
    assert code == 0 and json.loads(out)["head"] == {"seq": 19, "hash": head.hash}


def test_the_cli_routes_audit(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agentflow(["audit", "verify", "--file", str(chain_file)]) == 0
    assert "intact" in capsys.readouterr().out


def test_a_tampered_file_is_exit_1_naming_the_row(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = chain_file.read_text().splitlines()
    lines[7] = lines[7].replace('"approved"', '"rejected"')
    chain_file.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "verify", "--file", str(chain_file))
    assert code == 1 and "audit chain TAMPERED: row 7 was modified" in out


def test_an_unreadable_line_is_exit_1(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = chain_file.read_text().splitlines()
    lines[3] = "garbage"
    chain_file.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "verify", "--file", str(chain_file), "--json")
    report = json.loads(out)
    assert code == 1 and report["problem"]["kind"] == "malformed" and "line 4" in report["problem"]["message"]


def test_bytes_that_are_not_utf8_are_tampering_past_the_first_line_and_no_audit_file_on_it(
        chain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = chain_file.read_bytes()
    chain_file.write_bytes(raw + b"\xff\xfe{}\n")  # appended after the last row
    code, out, _ = run(capsys, "verify", "--file", str(chain_file), "--json")
    report = json.loads(out)
    assert code == 1 and report["problem"]["kind"] == "malformed" and "not UTF-8" in report["problem"]["message"]
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\xff\xfe" + raw)
    code, _, err = run(capsys, "verify", "--file", str(junk))
    assert code == 2 and "is not UTF-8 text" in err
    code, _, err = run(capsys, "export", "--file", str(chain_file))
    assert code == 2 and "not UTF-8" in err


def test_a_cut_tail_needs_the_anchor(chain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = JsonlAuditLog(chain_file).head()
    (tmp_path / "head.json").write_text(json.dumps({"seq": head.seq, "hash": head.hash}))
    lines = chain_file.read_text().splitlines()
    chain_file.write_text("\n".join(lines[:15]) + "\n")
    assert run(capsys, "verify", "--file", str(chain_file))[0] == 0
    code, out, _ = run(capsys, "verify", "--file", str(chain_file), "--expect-head", f"@{tmp_path / 'head.json'}")
    assert code == 1 and "rows 15..19 were deleted from the end" in out


def test_csv_and_partial_exports(chain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with chain_file.open() as f:
        rows = list(read_rows(f, "jsonl"))
    csv_file = tmp_path / "since.csv"
    csv_file.write_text(csv_header() + "".join(csv_line(r) for r in rows[5:]))
    assert run(capsys, "verify", "--file", str(csv_file))[0] == 1  # it does not start the chain
    assert run(capsys, "verify", "--file", str(csv_file), "--since", "5")[0] == 0
    code, _, err = run(capsys, "verify", "--file", str(csv_file), "--since", "4")
    assert code == 2 and "--since 4: the file starts at row 5" in err
    ns_file = tmp_path / "team-a.jsonl"
    ns_file.write_text("".join(json.dumps(r) + "\n" for r in rows if r["namespace"] == "team-a"))
    assert run(capsys, "verify", "--file", str(ns_file))[0] == 1
    code, out, _ = run(capsys, "verify", "--file", str(ns_file), "--namespace", "team-a")
    assert code == 0 and "note:" in out
    code, _, err = run(capsys, "verify", "--file", str(ns_file), "--namespace", "team-b")
    assert code == 2 and "not an export of that namespace" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--state-dir", "/nonexistent"], "no local audit chain at /nonexistent/audit.jsonl"),
        (["verify", "--file", "/nonexistent/audit.jsonl"], "--file: cannot read /nonexistent/audit.jsonl"),
        (["verify", "--file", "x", "--expect-head", "12"], "--expect-head: expected SEQ:HASH"),
        (["verify", "--file", "x", "--expect-head", "@/nonexistent"], "--expect-head: cannot read the head file"),
        (["verify", "--postgres-dsn", "postgresql://h/db", "--since", "3"], "describe an export: use them with --file"),
        (["export", "--state-dir", "/nonexistent"], "give --state-dir DIR, --file FILE or --postgres-dsn DSN"),
        (["verify", "--state-dir", "/nonexistent", "--since", "3"], "describe an export: use them with --file"),
        (["export", "--postgres-dsn", "postgresql://h/db", "--since", "-1"], "--since must be 0 or more"),
        (["verify", "--postgres-dsn", "not a dsn at all"], "invalid DSN"),
    ],
)
def test_bad_flags_are_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTFLOW_POSTGRES_DSN", raising=False)
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err, err


def test_argparse_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "frobnicate")[0] == 2
    code, out, _ = run(capsys, "verify", "--help")
    assert code == 0 and "--expect-head" in out and "rewritten" in out


def test_verify_and_export_default_to_the_local_runs_chain(
    chain_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --file or --postgres-dsn both read STATE_DIR/audit.jsonl, where the local runner writes."""
    monkeypatch.delenv("AGENTFLOW_POSTGRES_DSN", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".agentflow").mkdir()
    chain_file.rename(tmp_path / ".agentflow" / "audit.jsonl")
    head = JsonlAuditLog(tmp_path / ".agentflow" / "audit.jsonl").head()
    code, out, _ = run(capsys, "verify")
    assert code == 0 and "audit chain intact: 20 rows verified" in out and f"head: {head}" in out
    code, _, err = run(capsys, "export", "--output", "all.jsonl")
    assert code == 0 and "exported 20 audit rows to all.jsonl" in err and f"chain head {head}" in err
    assert json.loads((tmp_path / "all.jsonl.head.json").read_text())["hash"] == head.hash
    assert run(capsys, "verify", "--file", "all.jsonl", "--expect-head", "@all.jsonl.head.json")[0] == 0
    code, _, err = run(capsys, "export", "--format", "csv", "--namespace", "team-a", "-o", "a.csv")
    assert code == 0 and "exported 10 audit rows" in err and "--namespace team-a" in err
    assert run(capsys, "verify", "--file", "a.csv", "--namespace", "team-a")[0] == 0
    code, _, err = run(capsys, "export", "--since", "15", "-o", "tail.jsonl")
    assert code == 0 and "exported 5 audit rows" in err
    assert run(capsys, "verify", "--file", "tail.jsonl", "--since", "15", "--expect-head", str(head))[0] == 0
    monkeypatch.setenv("AGENTFLOW_STATE_DIR", str(tmp_path / "elsewhere"))
    assert agentflow(["--state-dir", str(tmp_path / ".agentflow"), "audit", "verify"]) == 0
