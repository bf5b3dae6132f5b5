"""`agentflow memory search|list|forget` on local runs' memory (the state dir): output, JSON, erasure recorded in
the state dir's audit chain (which `agentflow audit verify` checks), exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.memory import HashingEmbedder, Scope
from agentflow.memory.local import SqliteMemoryStore, default_path


def seed(state: Path) -> list[str]:
    store = SqliteMemoryStore(default_path(state), HashingEmbedder())

    async def save() -> list[str]:
        return [await store.save(Scope("default", agent), text) for agent, text in (
            ("support", "Ann Lee prefers e-mail."), ("support", "Shipping to Norway takes five days."),
            ("billing", "Ann Lee pays by card."), ("billing", "Invoices go out monthly."))]

    return asyncio.run(save())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["memory", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_search_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = seed(tmp_path)
    code, out, _ = run(capsys, "search", "--state-dir", str(tmp_path), "--agent", "support", "norway", "-k", "1")
    assert code == 0 and ids[1] in out and "Norway" in out
    code, out, _ = run(capsys, "list", "--state-dir", str(tmp_path), "--json")
    assert code == 0 and {e["id"] for e in json.loads(out)} == set(ids)
    code, out, _ = run(capsys, "list", "--state-dir", str(tmp_path), "--agent", "billing", "--json")
    assert {e["agent"] for e in json.loads(out)} == {"billing"}


def test_forget_a_subject_everywhere_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = seed(tmp_path)
    code, out, _ = run(capsys, "forget", "--state-dir", str(tmp_path), "--subject", "ann lee", "--by", "dpo",
                       "--json")
    assert code == 0 and sorted(json.loads(out)["forgotten"]) == sorted([ids[0], ids[2]])
    (row,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (row["kind"], row["actor"], row["namespace"], row["data"]["count"]) == (
        "memory_forget", "user:dpo", "default", 2)
    assert "ann" not in json.dumps(row).lower()
    assert main(["audit", "verify", "--file", str(tmp_path / "audit.jsonl")]) == 0


def test_forget_by_id_and_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = seed(tmp_path)
    code, _, _ = run(capsys, "forget", "--state-dir", str(tmp_path), "--agent", "support", "--id", ids[1])
    assert code == 0
    code, _, err = run(capsys, "forget", "--state-dir", str(tmp_path), "--agent", "support", "--id", ids[1])
    assert code == 1 and "MemoryNotFound" in err
    code, out, _ = run(capsys, "forget", "--state-dir", str(tmp_path), "--agent", "billing", "--all", "--json")
    assert code == 0 and len(json.loads(out)["forgotten"]) == 2


@pytest.mark.parametrize("argv, words", [
    (["forget", "--all"], "name it with --agent"),
    (["forget", "--id", "x"], "needs the fact's --agent"),
    (["search", "--agent", "a", "q", "--embedding-model", "openai/text-embedding-3-small"], "hashing-v1 only"),
    (["forget", "--agent", "a", "--id", "nope"], "not a memory id"),
    (["list", "--limit", "0"], "--limit 0: give 1 to 10000"),
    (["list", "--limit", "-1"], "--limit -1: give 1 to 10000"),
    (["list", "--limit", "99999999999999999999999"], "give 1 to 10000"),
    (["forget", "--agent", "a", "--all", "--by", "x" * 2000], "--by: is 2005 characters long"),
    (["forget", "--agent", "a", "--all", "--by", "a\x00b"], "--by: contains a NUL"),
])
def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    code, _, err = run(capsys, *argv[:1], "--state-dir", str(tmp_path), *argv[1:])
    assert code == 2 and words in err


@pytest.mark.parametrize("chain", ["garbage\n", "a folder"])
def test_nothing_is_erased_when_the_audit_chain_cannot_take_the_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], chain: str) -> None:
    ids = seed(tmp_path)
    if chain == "a folder":
        (tmp_path / "audit.jsonl").mkdir()
    else:
        (tmp_path / "audit.jsonl").write_text(chain)
    code, _, err = run(capsys, "forget", "--state-dir", str(tmp_path), "--agent", "billing", "--all")
    assert code == 1 and "nothing was erased" in err
    code, out, _ = run(capsys, "list", "--state-dir", str(tmp_path), "--json")
    assert {e["id"] for e in json.loads(out)} == set(ids)  # every fact is still there


def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state").write_text("x")
    code, _, err = run(capsys, "forget", "--state-dir", str(tmp_path / "state"), "--agent", "a", "--all")
    assert code == 1 and "nothing was erased" in err and "Traceback" not in err


def test_a_fact_cannot_fake_lines_or_reach_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteMemoryStore(default_path(tmp_path), HashingEmbedder())
    forged = "order 1\n11111111-2222  other/victim  Ann Lee SSN 123\x1b[31m"
    asyncio.run(store.save(Scope("default", "support"), forged))
    code, out, _ = run(capsys, "list", "--state-dir", str(tmp_path))
    assert code == 0 and len(out.splitlines()) == 1 and "\x1b" not in out
    assert "\\n11111111" in out and "\\x1b[31m" in out  # shown escaped, on the fact's own line
    code, out, _ = run(capsys, "list", "--state-dir", str(tmp_path), "--json")
    assert json.loads(out)[0]["text"] == forged  # JSON keeps the text as it is
