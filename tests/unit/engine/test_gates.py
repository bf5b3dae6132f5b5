"""Approval gates: a tool step whose tool has requiresApproval waits for a human before each call."""

from __future__ import annotations

import pytest

from agentflow.engine.plan import PlanError, ToolGate, compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import EventType, StepRequest, StepResult

from .harness import Harness, fail, ok, workflow

DAG = """
spec:
  inputs: {amount: 12}
  parallelism: 1
  steps:
  - {name: quote, kind: tool, tool: t}
  - {name: pay, kind: tool, tool: payments, dependsOn: [quote], inputs: {amount: "${{ inputs.amount }}"},
     retry: {limit: 2, backoff: {initialSeconds: 1}}}
  - {name: notify, kind: tool, tool: t, dependsOn: [pay]}
"""

FSM = """
spec:
  stateMachine:
    initial: pay
    states:
    - name: pay
      step: {name: pay-step, kind: tool, tool: payments}
      transitions: [{target: done}]
    - {name: done, final: Succeeded}
"""

GATE = ToolGate("payments", "money", 600.0)


def gated(text: str = DAG, gates: dict[str, ToolGate] | None = None) -> Harness:
    return Harness(compile_plan(workflow(text), {"pay": GATE} if gates is None else gates), start=0.0)


def until_waiting(h: Harness, node: str = "pay") -> None:
    """Drive until ``node`` waits for its approval (before its timeout fires)."""
    for _ in range(20):
        h.decide()
        if node in h.run.nodes and h.run.nodes[node].phase == "Waiting":
            return
        h.step()
    raise AssertionError(f"{node} never waited: {h.types()}")


def test_a_gated_step_waits_before_it_runs_and_runs_once_approved() -> None:
    h = gated()
    until_waiting(h)
    assert h.executed == [("quote", 1)]
    node = h.run.nodes["pay"]
    assert node.phase == "Waiting" and node.attempt == 0
    requested = next(e for e in h.events if e.type is EventType.approval_requested)
    assert requested.node == "pay"
    assert requested.data["gate"] == {"tool": "payments", "policy": "money", "timeoutSeconds": 600.0}
    assert requested.data["inputs"] == {"amount": 12}
    assert "tool payments" in requested.data["message"] and "money" in requested.data["message"]
    assert requested.data["deadline"] == 1.0 + 600
    h.post(EventType.approval_decided, "pay", approved=True, by="alice", reason="ok")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert h.executed == [("quote", 1), ("pay", 1), ("notify", 1)]
    assert h.types("pay") == ["ApprovalRequested", "ApprovalDecided", "StepScheduled", "StepSucceeded"]


def test_the_gates_are_recorded_in_run_started() -> None:
    h = gated()
    h.decide()
    started = h.events[0]
    assert started.type is EventType.run_started
    assert started.data["gates"] == {"pay": GATE.to_dict()}


def test_no_gates_leave_run_started_as_it_was() -> None:
    h = gated(gates={})
    h.decide()
    assert "gates" not in h.events[0].data
    assert h.run_until_blocked().phase == "Succeeded"


def test_rejection_fails_the_step_without_running_it() -> None:
    h = gated()
    until_waiting(h)
    h.post(EventType.approval_decided, "pay", approved=False, by="bob", reason="too much")
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.reason == "step pay: Rejected: rejected by bob: too much"
    assert ("pay", 1) not in h.executed and run.step_phase("notify") == "Skipped"


def test_nobody_deciding_in_time_fails_the_step() -> None:
    h = gated()
    run = h.run_until_blocked()
    assert run.phase == "Failed" and h.now == 601.0
    error = run.nodes["pay"].error
    assert error is not None and error.type == "ApprovalTimeout"
    assert ("pay", 1) not in h.executed


def test_retries_of_an_approved_call_do_not_ask_again() -> None:
    def flaky(request: StepRequest) -> tuple[float, StepResult]:
        if request.node == "pay" and request.attempt == 1:
            return fail("Flaky", "try again")
        return ok({"paid": True})

    h = Harness(compile_plan(workflow(DAG), {"pay": GATE}), flaky, start=0.0)
    until_waiting(h)
    h.post(EventType.approval_decided, "pay", approved=True, by="alice", reason="")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [e.type for e in h.events].count(EventType.approval_requested) == 1
    assert ("pay", 1) in h.executed and ("pay", 2) in h.executed


def test_resume_gates_what_the_journal_says_whatever_the_plan_now_says() -> None:
    h = gated()
    until_waiting(h)
    assert h.run.nodes["pay"].phase == "Waiting"
    # The ToolPolicy changed meanwhile (no longer requiresApproval): the run keeps its recorded gate.
    ungated = compile_plan(workflow(DAG), {})
    resumed = Run.resume(ungated, "run-1", h.events)
    assert resumed.nodes["pay"].phase == "Waiting"
    assert resumed.decide(2.0).start == ()
    # And a run started without gates is not gated on resume by a plan that has them now.
    h2 = gated(gates={})
    h2.decide()
    resumed2 = Run.resume(compile_plan(workflow(DAG), {"pay": GATE}), "run-1", h2.events)
    assert resumed2.gates == {}


def test_resume_after_the_approval_runs_the_step() -> None:
    h = gated()
    until_waiting(h)
    h.post(EventType.approval_decided, "pay", approved=True, by="alice", reason="")
    resumed = Harness(compile_plan(workflow(DAG), {"pay": GATE}), events=list(h.events), start=h.now)
    run = resumed.run_until_blocked()
    assert run.phase == "Succeeded"
    assert ("pay", 1) in resumed.executed


def test_a_gated_state_waits_by_its_visit() -> None:
    h = Harness(compile_plan(workflow(FSM), {"pay": GATE}), start=0.0)
    until_waiting(h, "pay#1")
    assert h.run.nodes["pay#1"].phase == "Waiting"
    assert h.executed == []
    h.post(EventType.approval_decided, "pay#1", approved=True, by="alice", reason="")
    assert h.run_until_blocked().phase == "Succeeded"
    assert h.executed == [("pay#1", 1)]


def test_a_waiting_gate_does_not_take_a_parallelism_slot() -> None:
    text = """
spec:
  parallelism: 1
  steps:
  - {name: pay, kind: tool, tool: payments}
  - {name: other, kind: tool, tool: t}
"""
    h = Harness(compile_plan(workflow(text), {"pay": GATE}), start=0.0)
    h.decide()
    assert h.run.nodes["pay"].phase == "Waiting" and h.run.nodes["other"].phase == "Running"


def test_gates_must_name_tool_steps() -> None:
    with pytest.raises(PlanError, match="quote2"):
        compile_plan(workflow(DAG), {"quote2": GATE})
