"""memory.kind conversation through the local runner (`agentflow run`, offline model): an Agent's later step is sent
its earlier exchange; over maxTokens a summary node compacts it through the gateway (journaled with its call), and
`agentflow replay` reads the summary back without calling anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main

FLOW = """
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: chat}
spec:
  inputs: {ticket: "Order 4411 was charged twice and the customer wants the duplicate refunded"}
  steps:
  - {name: first, kind: llm, agentRef: {name: clerk}, promptRef: {name: ask-v1}, inputs: {q: "${{ inputs.ticket }}"}}
  - {name: second, kind: llm, agentRef: {name: clerk}, promptRef: {name: ask-v1}, dependsOn: [first],
     inputs: {q: "What did the customer ask for before?"}}
---
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: clerk}
spec:
  role: support clerk
  model: {name: openai/gpt-4o-mini}
  memory: {kind: conversation, maxTokens: MAX}
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptVersion
metadata: {name: ask-v1}
spec:
  prompt: ask
  version: "1"
  messages:
  - {role: user, content: "${{ inputs.q }}"}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_BASE"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


LONG = "Order 4411 was charged twice and the customer wants the duplicate refunded. " + "It was urgent. " * 80


def run(workdir: Path, capsys: pytest.CaptureFixture[str], max_tokens: int,
        *args: str) -> tuple[dict[str, Any], list[Any]]:
    (workdir / "chat.yaml").write_text(FLOW.replace("MAX", str(max_tokens)))
    code = main(["run", "chat.yaml", "--json", *args])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    journal = workdir / ".agentflow" / "runs" / result["runId"] / "journal.jsonl"
    return result, [json.loads(line) for line in journal.read_text().splitlines()]


def outputs(journal: list[Any]) -> dict[str, Any]:
    return {r["node"]: r["data"]["output"] for r in journal if r["type"] == "StepSucceeded"}


def test_the_later_step_is_sent_the_earlier_exchange(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, journal = run(workdir, capsys, 4000)
    answers = outputs(journal)
    assert set(answers) == {"first/t1", "second/t1"}  # no summary: it fits
    # The offline model quotes the user messages it was sent: the second turn was sent first's inputs, then its own.
    quoted = answers["second/t1"]["value"]
    assert '"(step first) inputs: {"q": "Order 4411 was charged twice' in quoted
    assert "What did the customer ask for before?" in quoted


def test_over_budget_a_summary_node_compacts_it_and_replay_calls_nothing(
        workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    result, journal = run(workdir, capsys, 256, "--input", f"ticket={LONG}")  # ~300 tokens: over 256
    scheduled = [r["node"] for r in journal if r["type"] == "StepScheduled"]
    assert scheduled == ["first/t1", "second/s1", "second/t1"]
    summary = outputs(journal)["second/s1"]["summary"]
    assert summary.startswith("[offline summary] user: (step first) inputs:")
    assert "assistant: [offline model]" in summary
    calls = [r["data"]["call"] for r in journal if r["type"] == "CostRecorded" and r["node"] == "second/s1"]
    assert len(calls) == 1 and calls[0]["kind"] == "llm" and calls[0]["response"] == summary
    # The second turn was sent the summary instead of the exchange: the offline model quotes it first.
    assert outputs(journal)["second/t1"]["value"].split('began: "', 1)[1].startswith(
        "Summary of your earlier conversation in this run: [offline summary] user: (step first) inputs:")
    # Any model call during replay would go to this unreachable endpoint and fail.
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "litellm")
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    code = main(["replay", result["runId"], "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["samePathAndOutputs"] is True
