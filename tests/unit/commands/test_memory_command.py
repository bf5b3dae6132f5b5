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
])
def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    code, _, err = run(capsys, *argv[:1], "--state-dir", str(tmp_path), *argv[1:])
    assert code == 2 and words in err
