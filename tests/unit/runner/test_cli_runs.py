"""The local runner through its CLI: run, validate, approve, cancel, replay, diff, verify.

These run real runs (offline model, builtin and subprocess tools) in a temp
folder; nothing touches the network.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main

PIPELINE = """
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: pipeline}
spec:
  inputs: {docs: [alpha, beta, gamma], topic: cats}
  steps:
  - name: map
    kind: tool
    tool: echo
    forEach: inputs.docs
    parallelism: 2
    inputs: {doc: "${{ item }}", n: "${{ index }}"}
  - name: summarize
    kind: llm
    agentRef: {name: writer}
    promptRef: {name: summarize-v1}
    dependsOn: [map]
    inputs: {parts: "${{ steps.map.output }}", topic: "${{ inputs.topic }}"}
  - name: review
    kind: approval
    dependsOn: [summarize]
    when: "inputs.topic == 'dogs'"
    approval: {message: "Publish about ${{ inputs.topic }}?"}
  - name: publish
    kind: tool
    tool: echo
    dependsOn: [review]
    inputs: {text: "${{ steps.summarize.output }}"}
---
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: writer}
spec:
  role: writer
  instructions: Write short summaries.
  model: {name: openai/gpt-4o-mini}
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptVersion
metadata: {name: summarize-v1}
spec:
  prompt: summarize
  version: "1"
  messages:
  - {role: user, content: "Summarize ${{ inputs.parts }} about ${{ inputs.topic }}"}
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tools}
spec:
  tools:
  - name: echo
    builtin: {name: echo}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_BASE"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(list(args))
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        return code, out


def test_run_succeeds_offline_with_outputs_and_cost(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = cli(capsys, "run", "pipeline.yaml", "--json")
    assert code == 0, result
    assert result["phase"] == "Succeeded"
    phases = {n["node"]: n["phase"] for n in result["nodes"]}
    assert phases["review"] == "Skipped"
    # a dependency skipped by its `when` does not block: publish runs
    assert phases["publish"] == "Succeeded"
    assert phases["map[2]"] == "Succeeded"
    assert set(result["outputs"]) == {"publish"}
    assert result["outputs"]["publish"]["text"]


def test_validate_reports_every_problem_with_file_line_and_field(workdir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = PIPELINE.replace("dependsOn: [map]", "dependsOn: [publish]").replace(
        "when: \"inputs.topic == 'dogs'\"", "when: \"inputs.topic ==\"")
    (workdir / "bad.yaml").write_text(bad)
    code, result = cli(capsys, "validate", "bad.yaml", "--json")
    assert code == 2
    messages = [p["message"] for p in result["problems"]]
    assert any("cycle" in m for m in messages), messages
    assert any("invalid expression" in m for m in messages), messages
    assert all(p["source"] == "bad.yaml" and p["line"] for p in result["problems"])


def test_missing_file_is_a_usage_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope.yaml"]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not (workdir / ".agentflow" / "runs").exists() or not list((workdir / ".agentflow" / "runs").iterdir())


def test_bad_input_flag_names_the_argument(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pipeline.yaml", "--input", "novalue"]) == 2
    assert "--input 'novalue': expected KEY=VALUE" in capsys.readouterr().err


def test_approval_flow_wait_approve_resume(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = cli(capsys, "run", "pipeline.yaml", "--input", "topic=dogs", "--no-wait", "--json")
    assert code == 3
    run_id = result["runId"]
    assert {n["node"]: n["phase"] for n in result["nodes"]}["review"] == "Waiting"
    # someone not waiting for approval is refused, with the reason
    assert main(["approve", run_id, "publish"]) == 2
    assert "is not waiting for approval" in capsys.readouterr().err
    assert main(["approve", run_id, "review", "--by", "alice", "--reason", "fine"]) == 0
    capsys.readouterr()
    code, result = cli(capsys, "resume", run_id, "--json")
    assert code == 0
    review = next(n for n in result["nodes"] if n["node"] == "review")
    assert review["phase"] == "Succeeded"
    code, shown = cli(capsys, "show", run_id, "--json")
    assert shown["phase"] == "Succeeded"


def test_rejection_fails_the_run(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, result = cli(capsys, "run", "pipeline.yaml", "--input", "topic=dogs", "--no-wait", "--json")
    main(["approve", result["runId"], "review", "--reject", "--by", "bob", "--reason", "off-topic"])
    capsys.readouterr()
    code, result = cli(capsys, "resume", result["runId"], "--json")
    assert code == 1
    assert result["phase"] == "Failed"
    assert "rejected by bob: off-topic" in result["reason"]


def test_replay_takes_the_same_path_without_calling_anything(workdir: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, result = cli(capsys, "run", "pipeline.yaml", "--json")
    assert code == 0
    # Any model call during replay would go to this unreachable endpoint and fail.
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "litellm")
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    code, report = cli(capsys, "replay", result["runId"], "--json")
    assert code == 0, report
    assert report["samePathAndOutputs"] is True


def test_what_if_from_a_step_with_changed_input_and_diff(workdir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, first = cli(capsys, "run", "pipeline.yaml", "--json")
    code, report = cli(capsys, "replay", first["runId"], "--from-step", "summarize", "--input", "topic=birds",
                       "--json")
    assert code == 0, report
    assert report["liveSteps"] == ["summarize", "publish"]  # the step and what depends on it
    changed = {(c["node"], c["field"]) for c in report["changes"]}
    assert ("summarize", "output") in changed
    # recorded results were reused before the step: same outputs (only their timing differs)
    assert not any(node.startswith("map[") and field != "seconds" for node, field in changed), changed
    code, d = cli(capsys, "diff", first["runId"], report["run"], "--json")
    assert code == 0 and ("summarize", "output") in {(c["node"], c["field"]) for c in d["changes"]}


def test_verify_detects_a_tampered_journal(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, result = cli(capsys, "run", "pipeline.yaml", "--json")
    run_id = result["runId"]
    code, ok = cli(capsys, "verify", run_id, "--json")
    assert code == 0 and ok["ok"]
    journal = workdir / ".agentflow" / "runs" / run_id / "journal.jsonl"
    lines = journal.read_text().splitlines()
    lines[3] = lines[3].replace('"attempt":1', '"attempt":2', 1)
    journal.write_text("\n".join(lines) + "\n")
    code, bad = cli(capsys, "verify", run_id, "--json")
    assert code == 1 and bad["badSeq"] == 3


COUNTING = """
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {{name: counting}}
spec:
  inputs: {{items: [0, 1, 2, 3, 4, 5]}}
  parallelism: 2
  steps:
  - {{name: first, kind: tool, tool: slow}}
  - {{name: fan, kind: tool, tool: slow, dependsOn: [first], forEach: inputs.items, inputs: {{i: "${{{{ item }}}}"}}}}
  - {{name: last, kind: tool, tool: slow, dependsOn: [fan]}}
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: tools}}
spec:
  tools:
  - name: slow
    timeoutSeconds: 20
    container:
      image: local
      command: [{python}, {script}]
    permissions:
      env: {{COUNT_LOG: "{log}"}}
"""

SLOW_TOOL = """
import json, os, sys, time
key = os.environ["AGENTFLOW_IDEMPOTENCY_KEY"]
with open(os.environ["COUNT_LOG"], "a") as f:
    f.write(key + "\\n")
time.sleep(0.3)
print(json.dumps({"key": key}))
"""


def test_kill_9_at_random_moments_then_resume_never_reruns_finished_steps(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_TOOL)
    log = tmp_path / "calls.log"
    (tmp_path / "wf.yaml").write_text(COUNTING.format(python=sys.executable, script=script, log=log))
    env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}
    base = [sys.executable, "-m", "agentflow.cli", "--state-dir", str(tmp_path / "state")]
    rng = random.Random(1234)
    proc = subprocess.Popen([*base, "run", str(tmp_path / "wf.yaml"), "--progress", "none"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def journal_lines() -> int:
        files = list((tmp_path / "state").glob("runs/*/journal.jsonl"))
        return files[0].read_bytes().count(b"\n") if files else 0

    kills = 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        # Kill after a random amount of progress (not time), so the test does not depend on machine speed.
        target = journal_lines() + rng.randint(1, 6)
        while proc.poll() is None and journal_lines() < target and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is not None:
            break
        proc.kill()  # SIGKILL: no cleanup, no flush
        proc.wait()
        kills += 1
        proc = subprocess.Popen([*base, "resume", "latest", "--progress", "none"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert kills >= 3, kills
    shown = json.loads(subprocess.run([*base, "show", "latest", "--json"], env=env, capture_output=True,
                                      check=True).stdout)
    assert shown["phase"] == "Succeeded"
    verified = json.loads(subprocess.run([*base, "verify", "latest", "--json"], env=env, capture_output=True,
                                         check=True).stdout)
    assert verified["ok"]
    keys = log.read_text().split()
    by_node: dict[str, set[str]] = {}
    for key in keys:
        _, node, attempt = key.rsplit("/", 2)
        by_node.setdefault(node, set()).add(attempt)
    assert set(by_node) == {"first", "last", *(f"fan[{i}]" for i in range(6))}
    # A step re-executed after a crash keeps its attempt number and idempotency key:
    assert all(attempts == {"1"} for attempts in by_node.values()), by_node
    # Re-executions happen only for attempts in flight at a kill (at most 2 per kill).
    assert len(keys) - len(by_node) <= 2 * kills
