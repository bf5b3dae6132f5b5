"""`agentflow events` on local runs (no NATS; the cluster side is in tests/integration/test_events_command.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.cli import main as cli
from agentflow.commands.events import main, parse_since
from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.runner.follow import JournalFollower
from agentflow.runner.store import RunStore, StoreError

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "examples" / "manifests" / "quickstart.yaml"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished local runs of the quickstart (offline model)."""
    folder = tmp_path_factory.mktemp("state")
    os.environ["AGENTFLOW_MODEL_MODE"] = "offline"
    try:
        for _ in range(2):
            assert cli(["--state-dir", str(folder), "run", str(QUICKSTART), "--json"]) == 0
    finally:
        os.environ.pop("AGENTFLOW_MODEL_MODE", None)
    return folder


def records_of(state: Path) -> dict[str, list[dict[str, object]]]:
    store = RunStore(state)
    return {i.run_id: [r.to_dict() for r in store.open(i.run_id).read_records()] for i in store.list_runs()}


def test_json_lines_are_every_record_of_every_run_in_order(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(state), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_run: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        assert line["v"] == 1 and line["kind"] == "journal" and line["namespace"] is None
        assert line["workflow"] == "quickstart"
        by_run.setdefault(line["run"], []).append(line["record"])
    assert by_run == records_of(state)
    assert list(by_run) == [i.run_id for i in RunStore(state).list_runs()], "runs oldest first"


def test_text_lines_and_filters(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(state), "quickstart"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = sum(len(r) for r in records_of(state).values())
    assert len(lines) == total
    first_run = RunStore(state).list_runs()[0].run_id
    assert lines[0].split("  ")[1:5] == ["quickstart", first_run, "#0", "RunStarted"]
    assert main(["--state-dir", str(state), "other-workflow"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["--state-dir", str(state), "--since", "2999-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["-n", "team-a"], "-n selects a namespace of the cluster"),
    (["--since", "yesterday"], "--since 'yesterday': expected a duration"),
    (["Not_A_Name"], "WORKFLOW: workflow 'Not_A_Name' is not a Kubernetes resource name"),
    (["--nats-url", "http://x"], "--nats-url: 'http://x' is not a NATS URL"),
    (["--nats-url", "nats://x:4222", "-n", "Team A"], "-n: namespace 'Team A' is not a Kubernetes namespace"),
    (["--nats-url", "nats://x:4222", "wf>"], "WORKFLOW: workflow 'wf>'"),
    (["--nats-url", "nats://127.0.0.1:1", "--nats-creds", "/nonexistent/user.creds"],
     "--nats-creds /nonexistent/user.creds: no such file"),
])
def test_bad_arguments_exit_2_naming_them(tmp_path: Path, argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_since() -> None:
    assert parse_since(None, 1000.0) is None
    assert parse_since("10m", 1000.0) == 400.0
    assert parse_since("1970-01-01T00:01:00Z", 0) == 60.0
    assert parse_since("1970-01-01T00:01:00", 0) == 60.0  # UTC unless it says
    assert parse_since("1970-01-01T01:01:00+01:00", 0) == 60.0


def test_the_base_install_tails_local_runs_without_nats_and_says_which_extra_to_install(state: Path) -> None:
    code = ("import sys; sys.modules['nats'] = None; from agentflow.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    local = subprocess.run([sys.executable, "-c", code, "events", "--state-dir", str(state)], capture_output=True,
                           text=True, env=env, timeout=120)
    assert local.returncode == 0 and "RunStarted" in local.stdout, local.stderr
    cluster = subprocess.run([sys.executable, "-c", code, "events", "--nats-url", "nats://127.0.0.1:1"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert cluster.returncode == 2
    assert "pip install -e '.[operator]'" in cluster.stderr and cluster.stderr.count("\n") == 1


def test_the_follower_sees_new_records_new_runs_and_waits_for_a_torn_line(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    journal = Journal()
    run = store.create("one", "", {"workflow": "wf"})
    follower = JournalFollower(store)
    assert list(follower.poll()) == []
    first = journal.extend([Event(EventType.run_started, None, {}, 1.0), Event(EventType.fan_out, "f", {}, 2.0)])
    with run.lock():
        run.append(first)
    assert [r for _, r in follower.poll()] == first
    assert list(follower.poll()) == []
    # a line being written (no newline yet) waits for the next poll
    [third] = journal.extend([Event(EventType.run_finished, None, {"phase": "Succeeded"}, 3.0)])
    line = third.to_json() + b"\n"
    with run.journal_path.open("ab") as f:
        f.write(line[:10])
    assert list(follower.poll()) == []
    with run.journal_path.open("ab") as f:
        f.write(line[10:])
    assert [r for _, r in follower.poll()] == [third]
    # a run started meanwhile is read from its first record; filters by workflow and time
    other = store.create("two", "", {"workflow": "other"})
    records = Journal().extend([Event(EventType.run_started, None, {}, 5.0), Event(EventType.fan_out, "f", {}, 9.0)])
    with other.lock():
        other.append(records)
    assert [(i.run_id, r.seq) for i, r in follower.poll()] == [("two", 0), ("two", 1)]
    late = JournalFollower(store, workflow="other", since=6.0)
    assert [(i.run_id, r.seq) for i, r in late.poll()] == [("two", 1)]


def test_a_damaged_line_is_named(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = store.create("one", "", {"workflow": "wf"})
    records = Journal().extend([Event(EventType.run_started, None, {}, 1.0)])
    run.journal_path.write_bytes(b'{"broken": true}\n' + records[0].to_json() + b"\n")
    with pytest.raises(StoreError, match=r"journal.jsonl:1: not a journal record"):
        list(JournalFollower(store).poll())
