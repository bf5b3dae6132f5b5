"""The client's pure parts: a run's looks turned into events, statuses read, errors named by field."""

from __future__ import annotations

from agentflow.client import InputError, RunFailed, RunRefused, TemplateNotFound
from agentflow.client.errors import from_admission, from_findings
from agentflow.client.runs import RunEvent, RunResult, StepState, changes, result_of_status


def look(phase: str, **steps: str) -> RunResult:
    return RunResult("run-1", phase, steps={k: StepState(v, "boom" if v == "Failed" else None) for k, v in
                                              steps.items()})


def test_the_first_look_says_every_step_then_the_run() -> None:
    first = look("Running", draft="Succeeded", review="Running")
    assert [(e.kind, e.step, e.previous, e.phase) for e in changes(None, first)] == [
        ("step", "draft", None, "Succeeded"), ("step", "review", None, "Running"), ("run", None, None, "Running")]


def test_later_looks_say_only_what_changed_steps_before_the_run() -> None:
    before = look("Running", draft="Running")
    after = look("Failed", draft="Failed", publish="Skipped")
    events = changes(before, after)
    assert [str(e) for e in events] == ["step draft Running -> Failed: boom", "step publish - -> Skipped",
                                        "run Running -> Failed"]
    assert events[-1].result is after
    assert changes(after, after) == []


def test_a_status_is_read_as_the_operator_writes_it() -> None:
    status = {"phase": "Succeeded", "outputs": {"digest": "d"}, "costUsd": 0.25, "tokens": 120,
              "nodes": {"draft": {"phase": "Succeeded", "attempts": 1}, "map[0]": {"phase": "Failed", "message": "x"}}}
    result = result_of_status("wf", status)
    assert (result.phase, dict(result.outputs or {}), result.cost_usd, result.tokens) == ("Succeeded", {"digest": "d"},
                                                                                         0.25, 120)
    assert result.failed_step() == ("map[0]", "x")
    assert result_of_status("wf", None) == RunResult("wf", "Pending")  # not seen by the operator yet


def test_run_failed_names_the_first_failed_step_and_its_message() -> None:
    failed = RunFailed(look("Failed", draft="Succeeded", publish="Failed"))
    assert (failed.step, failed.message, failed.phase) == ("publish", "boom", "Failed")
    assert str(failed) == "run run-1 failed at step 'publish': boom"
    cancelled = RunFailed(RunResult("run-1", "Cancelled", message="cancelled by ada"))
    assert (cancelled.step, cancelled.message) == (None, "cancelled by ada")


def test_findings_become_typed_errors_naming_the_input() -> None:
    error = from_findings([(["spec", "inputs", "items", 2, "id"], "is not of type 'string'"),
                           (["spec", "inputs"], "'topic' is a required property")], template="t",
                          kind="WorkflowTemplate")
    assert isinstance(error, InputError) and isinstance(error, ValueError)
    assert error.field == "items[2].id"
    assert error.problems == [("items[2].id", "is not of type 'string'"), ("", "'topic' is a required property")]
    assert str(error) == "inputs.items[2].id: is not of type 'string'; inputs: 'topic' is a required property"
    missing = from_findings([(["spec", "workflowTemplateRef", "name"], "unknown WorkflowTemplate 't'")], template="t",
                            kind="WorkflowTemplate")
    assert isinstance(missing, TemplateNotFound) and (missing.template, missing.kind) == ("t", "WorkflowTemplate")


def test_an_admission_refusal_is_read_line_by_line() -> None:
    message = ('create workflows/run: 422 Unprocessable Entity {"message":"admission webhook denied the request: '
               'Workflow/run has 1 problem:\\n- spec.inputs.topic: \'ab\' is too short"}')
    error = from_admission(message.replace("\\n", "\n"), template="digest", kind="WorkflowTemplate")
    assert isinstance(error, InputError) and error.field == "topic"
    budget = from_admission("create workflows/run: 403 Forbidden Workflow/run: estimated cost $3.00 ...",
                            template="digest", kind="WorkflowTemplate")
    assert isinstance(budget, RunRefused) and "estimated cost" in str(budget)


def test_an_event_prints_what_changed() -> None:
    assert str(RunEvent("run", "Succeeded", "Running")) == "run Running -> Succeeded"
