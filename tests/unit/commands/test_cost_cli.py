"""`agentflow cost FILE.yaml` and `agentflow cost report`: output, JSON, and errors that name the flag or file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentflow import cli
from agentflow.runner import session
from agentflow.runner.store import RunStore

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "manifests" / "quickstart.yaml"
DOCS = REPO / "examples" / "manifests" / "document-analysis.yaml"


def test_estimate_prints_a_row_per_step_a_total_and_the_assumptions(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cost", str(DOCS), "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1]}
    assert "summarize" in rows and "combine" in rows and "TOTAL" in rows
    assert "openai/gpt-4o-mini" in rows["summarize"]
    assert "assumptions:" in out and "fallbacks anthropic/claude-3-5-haiku-latest" in out


def test_estimate_json_and_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cost", str(QUICKSTART), "--json", "--state-dir", str(tmp_path)]) == 0
    short = json.loads(capsys.readouterr().out)
    long_ticket = "my order " * 200
    assert cli.main(["cost", str(QUICKSTART), "--json", "--state-dir", str(tmp_path),
                     "--input", f"ticket={long_ticket}"]) == 0
    longer = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in short["steps"]] == ["classify", "search", "respond", "act"]
    assert longer["tokens"]["expected"] > short["tokens"]["expected"] + 400
    assert short["usd"]["low"] <= short["usd"]["expected"] <= short["usd"]["high"]


@pytest.mark.parametrize("argv, words", [
    (["cost", "no-such-file.yaml"], "no-such-file.yaml"),
    (["cost", str(QUICKSTART), "--input", "oops"], "--input 'oops': expected KEY=VALUE"),
    (["cost", str(QUICKSTART), "--min-samples", "0"], "--min-samples 0: must be at least 1"),
    (["cost", "report", "--since", "last week"], "--since 'last week': expected an ISO date/time"),
    (["cost", "report", "--min-calls", "0"], "--min-calls 0: must be at least 1"),
])
def test_bad_input_exits_2_naming_it(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err


def test_report_over_local_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path)
    for _ in range(2):  # the offline model answers: real journals, zero cost
        bundle = session.load_bundle([QUICKSTART])
        run_dir = session.create_run(store, bundle, [QUICKSTART])
        run = asyncio.run(session.drive(run_dir, bundle, session.make_executor(
            bundle, "inprocess", {"AGENTFLOW_MODEL_MODE": "offline"})))
        assert run.phase == "Succeeded"
    assert cli.main(["cost", "report", "--state-dir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calls"] == 4  # classify and respond, twice
    assert [w["key"] for w in report["byWorkflow"]] == ["(local)/quickstart"]
    assert [a["key"] for a in report["byAgent"]] == ["(local)/quickstart-agent"]
    assert "no evaluation results are recorded" in report["recommendationCriterion"]
    assert cli.main(["cost", "report", "--state-dir", str(tmp_path), "--since", "1h"]) == 0
    text = capsys.readouterr().out
    assert "spend from local runs in" in text and "4 calls" in text and "criterion:" in text
    # The estimate reads the same journals: the quickstart's two llm steps are calibrated with --min-samples 2.
    assert cli.main(["cost", str(QUICKSTART), "--state-dir", str(tmp_path), "--min-samples", "2", "--json"]) == 0
    steps = {s["step"]: s for s in json.loads(capsys.readouterr().out)["steps"]}
    assert steps["classify"]["calibrated"] and steps["respond"]["calibrated"]
