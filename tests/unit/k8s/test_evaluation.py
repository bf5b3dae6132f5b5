"""The evaluation Workflow of a PromptVersion's suite (agentflow.k8s.evaluation): its shape, and that running it
as a Workflow (here by the local runner, the engine the operator drives too) concludes exactly what `agentflow
prompt eval` concludes for the same suite."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.journal import Record
from agentflow.engine.values import Event, EventType
from agentflow.k8s import evaluation as ev
from agentflow.models import Catalog, LocalRef, PromptVersion, Workflow
from agentflow.runner import evaluate
from agentflow.validation import check_workflow
from services.evaluations import EXAMPLE, FAILING, catalog, run_as_workflow


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")


def test_the_workflow_pins_the_version_and_judges_after_each_case() -> None:
    prompt = catalog().prompts["ticket-triage-v2"]
    body = ev.workflow_body(prompt, "team-a", "")
    assert body == ev.workflow_body(prompt, "team-a", "")  # deterministic
    assert body["metadata"]["name"] == ev.workflow_name(prompt, "") != ev.workflow_name(prompt, "again")
    assert body["metadata"]["labels"][ev.EVALUATION_LABEL] == "ticket-triage-v2"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-ticket-triage-v2"
    steps = {s["name"]: s for s in body["spec"]["steps"]}
    assert steps["case-0"]["promptRef"] == {"name": "ticket-triage-v2"}  # by name: no rollout picks another
    assert all(s["continueOnFailure"] for s in steps.values())
    judges = [n for n in steps if "-judge-" in n]
    assert judges and all(steps[n]["dependsOn"] == [n.split("-judge-")[0]] for n in judges)
    assert steps[judges[0]]["promptRef"]["name"] in ev.judge_prompts()
    assert steps["case-0-pairwise"]["dependsOn"] == ["case-0", "case-0-baseline"]
    assert steps["case-0-baseline"]["promptRef"] == {"name": "ticket-triage-v1"}
    # what the reconciler checks before it runs a Workflow: nothing to refuse, nothing missing in the namespace
    spec = Workflow.model_validate(body).spec
    cat = catalog()
    full = Catalog(dict(cat.agents), {**cat.prompts, **ev.judge_prompts()}, dict(cat.policies), dict(cat.budgets))
    assert check_workflow(spec, None) == [] and check_workflow(spec, full, grants=False) == []


def test_case_inputs_are_values_never_templates() -> None:
    text = EXAMPLE.read_text()
    prompt = catalog(text).prompts["ticket-triage-v1"]
    suite = prompt.spec.evaluations
    assert suite is not None
    case = suite.cases[0].model_copy(update={"inputs": {"odd key \"x\"": "${{ inputs.secret }}"}})
    prompt = prompt.model_copy(update={"spec": prompt.spec.model_copy(update={"evaluations": suite.model_copy(
        update={"cases": [case]})})})
    body = ev.workflow_body(prompt, "ns", "")
    assert body["spec"]["inputs"]["cases"][0] == {"odd key \"x\"": "${{ inputs.secret }}"}
    assert body["spec"]["steps"][0]["inputs"] == {"odd key \"x\"": "${{ inputs.cases[0][\"odd key \\\"x\\\"\"] }}"}


def test_a_suite_too_big_for_one_workflow_names_the_field() -> None:
    prompt = catalog().prompts["ticket-triage-v2"]
    suite = prompt.spec.evaluations
    assert suite is not None
    many = [suite.cases[0].model_copy(update={"name": f"c{i}"}) for i in range(700)]
    big = prompt.model_copy(update={"spec": prompt.spec.model_copy(update={"evaluations": suite.model_copy(
        update={"cases": many})})})
    with pytest.raises(ev.EvaluationError, match=r"spec.evaluations.cases: the suite needs \d+ steps"):
        ev.workflow_body(big, "ns", "")


def test_the_judge_prompts_are_named_by_their_content() -> None:
    prompts = ev.judge_prompts()
    assert prompts == ev.judge_prompts() and len(prompts) == 2
    for name, prompt in prompts.items():
        assert prompt.metadata.name == name == prompt.spec.prompt
        body = ev.prompt_body(prompt, "ns")
        assert ev.same_spec(body, prompt)
        edited = copy.deepcopy(body)
        edited["spec"]["messages"][0]["content"] = "Always score 1."
        assert not ev.same_spec(edited, prompt)


@pytest.mark.parametrize("name", ["ticket-triage-v1", "ticket-triage-v2"])
def test_the_workflow_concludes_what_the_local_command_does(tmp_path: Path, name: str) -> None:
    cat = catalog()
    result = ev.conclude(cat.prompts[name], run_as_workflow(cat, name, tmp_path / "wf"))
    _, local, _ = asyncio.run(evaluate.run_suite(cat, name, tmp_path / "local", {"AGENTFLOW_MODEL_MODE": "offline"}))

    def verdicts(r: Any) -> list[Any]:
        return [(c.name, c.passed, round(c.score, 4), c.output, c.pairwise,
                 [(v.kind, v.passed, v.score) for v in c.verdicts]) for c in r.cases]

    assert verdicts(result) == verdicts(local)
    assert (result.pass_rate, result.mean_score, result.win_rate, result.failures) == (
        local.pass_rate, local.mean_score, local.win_rate, local.failures)
    assert result.tokens == local.tokens > 0 and result.input_tokens > 0 and result.output_tokens > 0


def test_a_failing_suite_fails_with_the_threshold_missed(tmp_path: Path) -> None:
    cat = catalog(EXAMPLE.read_text().replace(*FAILING))
    result = ev.conclude(cat.prompts["ticket-triage-v1"], run_as_workflow(cat, "ticket-triage-v1", tmp_path))
    assert not result.passed and result.failures == ("pass rate 50.00% is below minPassRate 100.00%",)
    status = ev.evaluation_status("Failed", workflow="w", trigger="", started_at="t0", result=result,
                                  finished_at="t1")["evaluation"]
    assert status["phase"] == "Failed" and status["passRate"] == 0.5 and status["cases"] == 2
    assert status["passedCases"] == 1 and status["message"] == result.failures[0]
    assert status["inputTokens"] == result.input_tokens and status["latencyP50Seconds"] is not None


def _record(seq: int, event: Event) -> Record:
    return Record(seq, event, "", "")


def test_a_case_that_never_ran_is_named() -> None:
    prompt = catalog().prompts["ticket-triage-v1"]
    records = [_record(0, Event(EventType.step_succeeded, "case-0", {"output": {"category": "billing"}}))]
    with pytest.raises(ev.EvaluationError, match=r"ended before 1 of 2 cases ran: parcel"):
        ev.conclude(prompt, records)


def test_a_failed_case_and_its_calls_count() -> None:
    prompt = catalog().prompts["ticket-triage-v1"]
    call = {"kind": "llm", "name": "m", "request_hash": "h", "response": "", "input_tokens": 7, "output_tokens": 3,
            "cost_usd": 0.5, "latency_ms": 200.0}
    records = [
        _record(0, Event(EventType.step_failed, "case-0", {"error": {"type": "OutputInvalid", "message": "bad"}})),
        _record(1, Event(EventType.cost_recorded, "case-0", {"call": call})),
        _record(2, Event(EventType.step_succeeded, "case-1", {"output": {"category": "shipping"}})),
    ]
    result = ev.conclude(prompt, records)
    first = result.cases[0]
    assert first.error == "OutputInvalid: bad" and not first.passed and first.score == 0
    assert (first.cost_usd, first.input_tokens, first.output_tokens) == (0.5, 7, 3)
    assert result.pass_rate < 1 and not result.passed


def test_status_of_an_error_clears_the_numbers() -> None:
    status = ev.evaluation_status("Error", workflow=None, trigger="x", started_at=None, message="why")
    assert status["evaluation"]["phase"] == "Error" and status["evaluation"]["passRate"] is None
    assert PromptVersion.model_fields["status"] is not None


def test_the_suites_budget_is_the_workflows_and_the_local_runs() -> None:
    cat = catalog()
    prompt = cat.prompts["ticket-triage-v1"]
    suite = prompt.spec.evaluations
    assert suite is not None
    budgeted = prompt.model_copy(update={"spec": prompt.spec.model_copy(update={"evaluations": suite.model_copy(
        update={"budget_ref": LocalRef(name="evals")})})})
    assert ev.workflow_body(budgeted, "ns", "")["spec"]["budgetRef"] == {"name": "evals"}
    cat.prompts["ticket-triage-v1"] = budgeted
    with pytest.raises(evaluate.SessionError, match="refers to evals, not in the manifests"):
        evaluate.eval_bundle(cat, "ticket-triage-v1")
