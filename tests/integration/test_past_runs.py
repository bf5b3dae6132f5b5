"""Episodic memory on a cluster: ``past_runs`` answered from the operator's journal in a real PostgreSQL.

Two real runs of the quickstart (the local runner, offline model) are stored as the operator stores runs (the
journal's records and an attempt naming the namespace, Workflow and manifests); StoredEpisodes reads them back
for the Agent, newest first, and never another namespace's or another Agent's runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from agentflow.memory import AgentMemory, MemoryUnavailable, Scope, StoredEpisodes
from agentflow.models import Agent
from agentflow.runner.store import RunStore
from agentflow.storage import PostgresStore
from agentflow.storage.attempts import AttemptPod

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def quickstart_runs(state: Path, n: int) -> RunStore:
    env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline", "PYTHONPATH": str(REPO / "operator")}
    for _ in range(n):
        done = subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(state), "run",
                               str(REPO / "examples/manifests/quickstart.yaml"), "--json"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
    return RunStore(state)


async def store_as_the_operator_does(store: PostgresStore, runs: RunStore, namespace: str) -> list[str]:
    """Each local run under a fresh uid: its journal, and one attempt naming where it ran. Oldest first."""
    uids = []
    for info in runs.list_runs():
        run = runs.open(info.run_id)
        uid = str(uuid.uuid4())
        await store.append(uid, run.read_records())
        await store.put_attempt(uid, "greet", 1, {"request": {}, "manifests": run.manifests_yaml,
                                                  "workflow": info.workflow},
                                pod=AttemptPod(namespace, info.workflow, f"quickstart-{uid[:8]}-greet-1"))
        uids.append(uid)
    return uids


def agent(namespace: str, name: str = "quickstart-agent") -> Agent:
    return Agent.model_validate({"metadata": {"name": name, "namespace": namespace}, "spec": {
        "role": "helper", "model": {"name": "openai/gpt-4o-mini"}, "memory": {"episodic": True}}})


async def test_past_runs_come_from_the_operators_journal(store: PostgresStore, tmp_path: Path) -> None:
    namespace = f"team-{uuid.uuid4().hex[:8]}"
    uids = await store_as_the_operator_does(store, quickstart_runs(tmp_path, 3), namespace)
    episodes = StoredEpisodes(store)
    memory = AgentMemory.of(agent(namespace), episodes=episodes, run_id=uids[-1])
    answer = await memory.call("past_runs", {"limit": 5})
    runs = answer["runs"]
    assert [r["run"] for r in runs] == [uids[1], uids[0]]  # newest first, the current run left out
    assert all(r["workflow"] == "quickstart" and r["phase"] == "Succeeded" for r in runs)
    assert runs[0]["steps"] and all(s["phase"] == "Succeeded" for s in runs[0]["steps"])
    assert [r["run"] for r in (await memory.call("past_runs", {"limit": 1}))["runs"]] == [uids[1]]
    assert (await memory.call("past_runs", {"workflow": "nope"}))["runs"] == []
    # Another Agent ran no step in these runs; another namespace sees none of them.
    other = AgentMemory.of(agent(namespace, "someone-else"), episodes=episodes)
    assert (await other.call("past_runs", {}))["runs"] == []
    assert await episodes.past_runs(Scope(f"other-{namespace}", "quickstart-agent")) == []


async def test_a_damaged_run_is_left_out_and_a_lost_database_is_named(store: PostgresStore, tmp_path: Path,
                                                                      postgres_dsn: str) -> None:
    namespace = f"team-{uuid.uuid4().hex[:8]}"
    uids = await store_as_the_operator_does(store, quickstart_runs(tmp_path, 2), namespace)
    conn = await asyncpg.connect(postgres_dsn)
    try:  # the newest run's manifests no longer parse
        await conn.execute("UPDATE agentflow_attempts SET payload = $2::text::json WHERE run_uid = $1", uids[1],
                           json.dumps({"request": {}, "manifests": "kind: [unclosed", "workflow": "quickstart"}))
    finally:
        await conn.close()
    found = await StoredEpisodes(store).past_runs(Scope(namespace, "quickstart-agent"))
    assert [r["run"] for r in found] == [uids[0]]
    closed = await PostgresStore.connect(postgres_dsn)
    await closed.close()
    with pytest.raises(MemoryUnavailable, match="past runs could not be read"):
        await StoredEpisodes(closed).past_runs(Scope(namespace, "quickstart-agent"))
