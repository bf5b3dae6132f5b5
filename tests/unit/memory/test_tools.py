"""Memory as the agent loop's tools: the function schemas an Agent's spec.memory enables, the calls and their plain
JSON answers, bad arguments; past_runs over the local runner's journals of a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentflow.memory import AgentMemory, HashingEmbedder, InvalidMemory, MemoryUnavailable, NoEpisodes, Scope
from agentflow.memory.local import SqliteMemoryStore
from agentflow.models import Agent
from agentflow.runner.episodes import LocalEpisodes
from agentflow.runner.store import RunStore

REPO = Path(__file__).resolve().parents[3]


def agent(memory: dict[str, Any], name: str = "quickstart-agent") -> Agent:
    return Agent.model_validate({"metadata": {"name": name}, "spec": {
        "role": "helper", "model": {"name": "openai/gpt-4o-mini"}, "memory": memory}})


def names(memory: AgentMemory) -> list[str]:
    return [s["function"]["name"] for s in memory.function_schemas()]


def test_the_agent_spec_decides_which_functions_are_offered() -> None:
    assert names(AgentMemory.of(agent({}))) == []
    assert names(AgentMemory.of(agent({"longTerm": {}}))) == ["memory_search", "memory_save"]
    assert names(AgentMemory.of(agent({"longTerm": {}, "episodic": True}))) == [
        "memory_search", "memory_save", "past_runs"]
    (search, _save) = AgentMemory.of(agent({"longTerm": {"searchK": 3}})).function_schemas()
    assert search["type"] == "function"
    assert search["function"]["parameters"]["properties"]["k"]["maximum"] == 3
    assert search["function"]["parameters"]["required"] == ["query"]


async def test_save_then_search_with_the_agents_limits_and_ttl(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    store = SqliteMemoryStore(tmp_path / "m.sqlite3", HashingEmbedder(), clock=lambda: now[0])
    memory = AgentMemory.of(agent({"longTerm": {"searchK": 2, "tokenBudget": 40, "ttlSeconds": 3600}}),
                            store=store, run_id="run-1")
    saved = await memory.call("memory_save", {"text": "Ann prefers e-mail over phone calls.", "subject": "Ann",
                                              "tags": ["contact"]})
    await memory.call("memory_save", {"text": "Ann's orders ship to Oslo."})
    await memory.call("memory_save", {"text": "Ann asked about refunds " + "and more " * 40})
    found = await memory.call("memory_search", {"query": "e-mail or phone for Ann?"})
    assert json.loads(json.dumps(found)) == found  # plain JSON, as the loop journals it
    hits = found["memories"]
    assert len(hits) <= 2 and hits[0]["id"] == saved["id"]
    assert sum(h["tokens"] for h in hits) <= 40
    assert hits[0]["metadata"] == {"subject": "Ann", "tags": ["contact"], "run": "run-1"}
    entry = (await store.entries(Scope("default", "quickstart-agent")))[0]
    assert entry["expiresAt"] == entry["createdAt"] + 3600


async def test_bad_calls_are_refused_with_why(tmp_path: Path) -> None:
    store = SqliteMemoryStore(tmp_path / "m.sqlite3", HashingEmbedder())
    memory = AgentMemory.of(agent({"longTerm": {"searchK": 3}}), store=store)
    for name, arguments, words in (
            ("memory_search", {}, "'query' must be a non-empty string"),
            ("memory_search", {"query": "q", "k": 9}, "from 1 to 3"),
            ("memory_save", {"text": "x", "tags": "vip"}, "list of at most 10 strings"),
            ("past_runs", {}, "does not set spec.memory.episodic"),
            ("memory_delete", {}, "no memory function is called 'memory_delete'")):
        with pytest.raises(InvalidMemory, match=words):
            await memory.call(name, arguments)
    with pytest.raises(InvalidMemory, match=r"has no spec\.memory\.longTerm"):
        await AgentMemory.of(agent({"episodic": True}), store=store).call("memory_search", {"query": "q"})
    with pytest.raises(MemoryUnavailable, match="past runs are not available to agents here"):
        await AgentMemory.of(agent({"episodic": True}), episodes=NoEpisodes()).call("past_runs", {})


async def test_past_runs_reads_the_local_journals(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline", "PYTHONPATH": str(REPO / "operator")}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(tmp_path), "run",
                               str(REPO / "examples/manifests/quickstart.yaml"), "--json"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
    runs = RunStore(tmp_path).list_runs()
    memory = AgentMemory.of(agent({"episodic": True}), episodes=LocalEpisodes(RunStore(tmp_path)),
                            run_id=runs[-1].run_id)
    answer = await memory.call("past_runs", {"limit": 5})
    assert json.loads(json.dumps(answer)) == answer
    (episode,) = answer["runs"]  # the current run (the newest) is left out
    assert episode["run"] == runs[0].run_id and episode["workflow"] == "quickstart"
    assert episode["phase"] == "Succeeded" and episode["namespace"] == "default"
    assert episode["steps"] and all(s["phase"] == "Succeeded" for s in episode["steps"])
    other = AgentMemory.of(agent({"episodic": True}, name="someone-else"), episodes=LocalEpisodes(RunStore(tmp_path)))
    assert (await other.call("past_runs", {}))["runs"] == []
    assert (await memory.call("past_runs", {"workflow": "nope"}))["runs"] == []
