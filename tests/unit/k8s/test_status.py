"""Workflow status: phases, conditions that kstatus and Argo CD read, stable transition times, small size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from agentflow.engine.values import EventType
from agentflow.k8s.status import (
    MAX_INLINE_OUTPUTS,
    PREVIEW_CHARS,
    preview,
    rfc3339,
    workflow_phase,
    workflow_status,
)
from agentflow.models import WorkflowStatus

from .cases import build
from .runs import START, drive

CASES = Path(__file__).parent / "cases"

FAN_OUT = """
metadata: {name: big}
spec:
  inputs: {xs: %s}
  steps:
  - {name: items, kind: tool, tool: t, forEach: "inputs.xs"}
"""

TWO_STEPS = """
metadata: {name: two}
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: b, kind: tool, tool: t, dependsOn: [a]}
"""


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize("path", sorted(CASES.glob("status-*.yaml")), ids=lambda p: p.stem)
def test_every_case_status_is_a_workflow_status(path: Path) -> None:
    status = build("status", yaml.safe_load(path.read_text())["input"])
    parsed = WorkflowStatus.model_validate(status)
    assert parsed.dump() == status, "every field is in WorkflowStatus (or a deliberate extra)"
    assert {c.type for c in parsed.conditions} == {"Ready", "Succeeded", "Failed", "Reconciling", "Stalled", "Waiting"}


def test_a_5000_node_run_stays_far_below_etcds_limit() -> None:
    outcomes = {f"items[{i}]": {"output": {"text": "x" * 2000, "i": i}} for i in range(0, 5000, 2)}
    outcomes |= {f"items[{i}]": {"fail": {"type": "Boom", "message": "y" * 3000}} for i in range(1, 5000, 50)}
    h = drive({"workflow": FAN_OUT % list(range(5000)), "outcomes": outcomes})
    assert len(h.run.nodes) > 5000
    status = workflow_status(h.run, generation=1, output_ref=lambda n: f"agentflow://runs/uid/{n}",
                             trace_id="0" * 32)
    size = len(orjson.dumps(status))
    assert size < 100 * 1024, size
    assert status["nodeSummary"]["total"] == len(h.run.nodes)
    assert sum(status["nodeSummary"]["byPhase"].values()) == len(h.run.nodes)
    by_phase = status["nodeSummary"]["byPhase"]
    not_succeeded = len(h.run.nodes) - by_phase["Succeeded"]
    shown = [n["phase"] for n in status["nodes"].values()]
    assert len(shown) - shown.count("Succeeded") == not_succeeded == 101, "every failure is shown first"
    assert 0 < shown.count("Succeeded") < 100, "then the most recent successes, as room allows"


def test_many_big_nodes_are_cut_by_bytes_as_well_as_count() -> None:
    outcomes = {f"items[{i}]": {"output": "z" * 5000} for i in range(300)}
    h = drive({"workflow": FAN_OUT % list(range(300)), "outcomes": outcomes})
    status = workflow_status(h.run, max_nodes=1000, max_node_bytes=20_000)
    assert len(orjson.dumps(status["nodes"])) <= 20_000
    assert 0 < status["nodeSummary"]["shown"] == len(status["nodes"]) < 300


def test_small_runs_list_every_node_without_a_summary() -> None:
    status = workflow_status(drive({"workflow": TWO_STEPS}).run)
    assert list(status["nodes"]) == ["a", "b"] and "nodeSummary" not in status


def test_the_preview_is_the_start_of_compact_json() -> None:
    assert preview({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    long = preview("x" * 1000)
    assert len(long) == PREVIEW_CHARS and long.startswith("xxx") and long.endswith("…")


def test_the_preview_masks_personal_data() -> None:
    shown = preview({"to": "jane.doe@example.com", "phone": "+44 20 7946 0958", "iban": "DE89370400440532013000"})
    assert "jane" not in shown and "7946" not in shown and "DE89" not in shown
    assert all(tag in shown for tag in ("<EMAIL>", "<PHONE>", "<IBAN>")), shown


def test_outputs_only_when_finished_and_small() -> None:
    running = drive({"workflow": TWO_STEPS, "steps": 1}).run
    assert "outputs" not in workflow_status(running)
    small = drive({"workflow": TWO_STEPS, "outcomes": {"b": {"output": "ok"}}}).run
    assert workflow_status(small)["outputs"] == {"b": "ok"}
    big = drive({"workflow": TWO_STEPS, "outcomes": {"b": {"output": "x" * MAX_INLINE_OUTPUTS}}}).run
    status = workflow_status(big, output_ref=lambda n: f"ref:{n}")
    assert "outputs" not in status and status["outputsRef"] == "ref:None"
    assert "outputsRef" not in workflow_status(big), "no ref without a store to point to"


def test_transition_times_change_only_with_the_status() -> None:
    h = drive({"workflow": TWO_STEPS, "steps": 1, "outcomes": {"b": {"duration": 100}}})
    h.decide()
    first = workflow_status(h.run, now=START + 1)
    assert conditions(first)["Reconciling"]["lastTransitionTime"] == rfc3339(START + 1)
    again = workflow_status(h.run, now=START + 50, previous=first["conditions"])
    assert again["conditions"] == first["conditions"], "nothing changed, nothing moves"
    h.run_until_blocked()
    done = workflow_status(h.run, now=START + 200, previous=again["conditions"])
    c = conditions(done)
    assert c["Failed"]["lastTransitionTime"] == rfc3339(START + 1), "Failed stayed False"
    assert c["Ready"]["lastTransitionTime"] == rfc3339(START + 200), "Ready went False -> True"
    assert c["Succeeded"]["lastTransitionTime"] == rfc3339(START + 200), "Succeeded went Unknown -> True"
    assert c["Reconciling"]["lastTransitionTime"] == rfc3339(START + 200)


def test_without_now_a_change_is_dated_by_the_run() -> None:
    h = drive({"workflow": TWO_STEPS})
    status = workflow_status(h.run)
    assert conditions(status)["Succeeded"]["lastTransitionTime"] == rfc3339(h.run.finished_at or 0)
    pending = drive({"workflow": TWO_STEPS, "steps": 0}).run
    assert workflow_phase(pending) == "Pending"
    assert all("lastTransitionTime" not in c for c in workflow_status(pending)["conditions"])


def test_kstatus_reads_reconciling_then_current_or_stalled() -> None:
    running = workflow_status(drive({"workflow": TWO_STEPS, "steps": 1}).run)
    assert conditions(running)["Reconciling"]["status"] == "True"
    assert conditions(running)["Reconciling"]["reason"] == "Running"
    assert conditions(running)["Ready"]["status"] == "False", "Ready is the run's success, not the operator's"
    ok = workflow_status(drive({"workflow": TWO_STEPS}).run)
    assert [conditions(ok)[t]["status"] for t in ("Reconciling", "Stalled", "Ready")] == ["False", "False", "True"]
    failed = workflow_status(drive({"workflow": TWO_STEPS, "outcomes": {"a": {"fail": {"retryable": False}}}}).run)
    assert conditions(failed)["Stalled"] == {**conditions(failed)["Stalled"], "status": "True", "reason": "StepFailed"}
    assert conditions(failed)["Ready"]["status"] == "False"


def test_a_workflow_timeout_is_its_own_reason() -> None:
    spec = TWO_STEPS.replace("spec:\n", "spec:\n  timeoutSeconds: 5\n")
    run = drive({"workflow": spec, "outcomes": {"a": {"duration": 60}}}).run
    status = workflow_status(run)
    assert status["phase"] == "Failed" and conditions(status)["Failed"]["reason"] == "TimedOut"


def test_suspend_and_resume() -> None:
    h = drive({"workflow": TWO_STEPS, "steps": 1, "then": [{"type": "Suspended", "data": {"by": "x"}}]})
    assert workflow_status(h.run)["phase"] == "Suspended"
    h.post(EventType.resumed, by="x")
    assert workflow_status(h.run)["phase"] == "Running"
