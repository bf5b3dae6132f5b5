"""`agentflow prompt cases NAME --run RUN`: past runs' inputs become evaluation cases. Local runs of the
prompt-rollout example (offline model); the cases are valid suite cases that `agentflow prompt eval` runs; bad
requests exit 2 naming what is wrong. (The operator's runs in PostgreSQL: tests/integration/test_evaluations.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentflow.cli import main
from agentflow.engine.journal import Record
from agentflow.engine.values import Event, EventType
from agentflow.models import EvaluationCase
from agentflow.prompts.cases import prompt_steps, recorded_prompts, run_cases
from agentflow.runner.store import RunStore
from services.evaluations import EXAMPLE


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")


def cases(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["prompt", "cases", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def local_runs(state: Path, capsys: pytest.CaptureFixture[str], tickets: list[str]) -> list[str]:
    for ticket in tickets:
        assert main(["--state-dir", str(state), "run", str(EXAMPLE), "--input", f"ticket={ticket}", "--json"]) == 0
    capsys.readouterr()
    return [r.run_id for r in RunStore(state).list_runs()]


def test_runs_inputs_become_cases_of_the_version_they_rendered(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    runs = local_runs(tmp_path, capsys, ["refund me", "where is my parcel", "reset my password"])
    got: dict[str, str] = {}  # run -> the version its triage step rendered (the canary split)
    for run in runs:
        got[run] = recorded_prompts(RunStore(tmp_path).resolve(run).read_records())["triage"]["name"]
    for version in ("ticket-triage-v1", "ticket-triage-v2"):
        mine = [r for r in runs if got[r] == version]
        if not mine:
            continue
        argv = [version, "--state-dir", str(tmp_path), "--expect-output"]
        for run in mine:
            argv += ["--run", run]
        code, out, err = cases(capsys, *argv)
        assert code == 0, err
        found = yaml.safe_load(out)["cases"]
        assert [c["name"] for c in found] == [f"{r}/triage" for r in mine]
        assert all(set(c["inputs"]) == {"ticket"} and c["assertions"][0]["equals"] for c in found)
        for case in found:
            EvaluationCase.model_validate(case)
    other = next(r for r in runs)
    wrong = "ticket-triage-v2" if got[other] == "ticket-triage-v1" else "ticket-triage-v1"
    code, _, err = cases(capsys, wrong, "--run", other, "--state-dir", str(tmp_path))
    assert code == 2 and f"no llm step rendered PromptVersion {wrong!r}; name one with --step" in err
    code, out, _ = cases(capsys, wrong, "--run", other, "--step", "triage", "--state-dir", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["cases"][0]["inputs"]["ticket"] == "refund me"
    assert "assertions" not in json.loads(out)["cases"][0]


def test_bad_requests_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cases(capsys, "x", "--run", "nope", "--state-dir", str(tmp_path))
    assert code == 2 and "--run nope:" in err
    code, _, err = cases(capsys, "x", "--run", "nope", "-n", "team-a")
    assert code == 2 and "give --postgres-dsn too" in err
    code, _, err = cases(capsys, "x", "--run", "nope", "--postgres-dsn", "postgresql://u@127.0.0.1:1/db")
    assert code == 2 and "-n/--namespace" in err


def test_fan_out_items_and_retries() -> None:
    def rec(seq: int, type: EventType, node: str, **data: object) -> Record:
        return Record(seq, Event(type, node, data), "", "")

    records = [
        rec(0, EventType.step_scheduled, "ask[0]", step="ask", attempt=1, inputs={"q": "a"}),
        rec(1, EventType.step_failed, "ask[0]", attempt=1, error={"type": "X", "message": ""}),
        rec(2, EventType.step_scheduled, "ask[0]", step="ask", attempt=2, inputs={"q": "a"}),
        rec(3, EventType.step_succeeded, "ask[0]", attempt=2, output="A"),
        rec(4, EventType.step_scheduled, "ask[1]", step="ask", attempt=1, inputs={"q": "b"}),
        rec(5, EventType.step_scheduled, "other", step="other", attempt=1, inputs={"q": "c"}),
    ]
    assert run_cases("r", records, {"ask"}, expect_output=True) == [
        {"name": "r/ask[0]", "inputs": {"q": "a"}, "assertions": [{"equals": "A"}]},
        {"name": "r/ask[1]", "inputs": {"q": "b"}},
    ]


def test_an_agent_loops_turns_and_tool_calls_are_not_cases_of_its_prompt() -> None:
    def rec(seq: int, type: EventType, node: str, **data: object) -> Record:
        return Record(seq, Event(type, node, data), "", "")

    records = [
        rec(0, EventType.loop_started, "answer", step="answer", inputs={"ticket": "late"}),
        rec(1, EventType.step_scheduled, "answer/t1", step="answer", attempt=1, inputs={"ticket": "late"}),
        rec(2, EventType.step_scheduled, "answer/t1/call-2", step="answer", attempt=1, inputs={"query": "x"}),
        rec(3, EventType.step_scheduled, "answer/t2", step="answer", attempt=1, inputs={"ticket": "late"}),
        rec(4, EventType.loop_finished, "answer", phase="Succeeded", output={"reply": "soon"}),
    ]
    assert run_cases("r", records, {"answer"}, expect_output=True) == [
        {"name": "r/answer", "inputs": {"ticket": "late"}, "assertions": [{"equals": {"reply": "soon"}}]}]


def test_prompt_steps_by_name_or_recorded_family_choice() -> None:
    from agentflow.models import Workflow

    workflow = Workflow.model_validate({"metadata": {"name": "w"}, "spec": {"steps": [
        {"name": "a", "kind": "llm", "agentRef": {"name": "x"}, "promptRef": {"name": "p1"}},
        {"name": "b", "kind": "llm", "agentRef": {"name": "x"}, "promptRef": {"family": "p"}},
        {"name": "c", "kind": "tool", "tool": "t"}]}})
    assert prompt_steps(workflow, "p1") == {"a"}
    assert prompt_steps(workflow, "p2", {"b": {"name": "p2"}}) == {"b"}
    assert prompt_steps(workflow, "p1", {"b": {"name": "p2"}}) == {"a"}
