"""Plan steps in the engine: a planner's plan becomes nodes ``STEP/pN/NAME``, journaled (PlanAccepted) so resume
and replay go on from it; a refused plan runs the fallback; hostile plans each get a bounded outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentflow.engine.planner import PlanPolicy, check_plan, plan_depth
from agentflow.engine.run import Run
from agentflow.engine.values import EventType, StepRequest, StepResult
from agentflow.models import PlannerSpec
from agentflow.runner.replay import replay_exact

from .harness import Harness, fail, ok, plan

FLOW = """
spec:
  inputs: {incident: "checkout is down"}
  fallbackMachines:
    manual:
      initial: page
      states:
      - {name: page, step: {name: page, kind: tool, tool: pager, inputs: {why: "${{ inputs.incident }}"}},
         transitions: [{target: done}]}
      - {name: done, final: Succeeded}
  steps:
  - name: respond
    kind: plan
    agentRef: {name: planner}
    inputs: {goal: "${{ inputs.incident }}"}
    planner:
      agents: [worker]
      prompts: [summarise]
      tools: [logs, pager]
      limits: {maxSteps: 4, maxDepth: 3, maxCostUsd: 1.0}
      repairs: 1
      fallback: {stateMachine: manual}
  - {name: report, kind: tool, tool: pager, dependsOn: [respond], inputs: {plan: "${{ steps.respond.output }}"}}
"""

GOOD = {"steps": [
    {"name": "fetch", "kind": "tool", "tool": "logs", "inputs": {"q": "${{ inputs.incident }}"}},
    {"name": "sum", "kind": "llm", "agentRef": "worker", "promptRef": "summarise",
     "inputs": {"logs": "${{ steps.fetch.output }}"}, "dependsOn": ["fetch"]},
]}


def planner(plan_output: Any, calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    def behaviour(request: StepRequest) -> tuple[float, StepResult]:
        if calls is not None:
            calls.append(request.node)
        if request.kind == "plan":
            value = plan_output(request) if callable(plan_output) else plan_output
            return ok(value)
        return ok({"node": request.node, "inputs": dict(request.inputs)})
    return behaviour


def accepted(value: Any, estimate: float = 0.1) -> dict[str, Any]:
    return {"accepted": True, "plan": value, "estimateUsd": estimate, "repairs": 0}


def test_a_valid_plan_expands_into_nodes_and_runs() -> None:
    h = Harness(plan(FLOW), planner(accepted(GOOD)))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    ran = [node for node, _ in h.executed]
    assert ran == ["respond/plan1", "respond/p1/fetch", "respond/p1/sum", "report"]
    assert "PlanAccepted" in h.types("respond")
    fetch = next(r for r in h.requests if r.node == "respond/p1/fetch")
    assert fetch.step == "respond" and fetch.kind == "tool"
    assert fetch.inputs == {"q": "checkout is down"}
    assert fetch.context is not None and fetch.context["planned"]["tool"] == "logs"
    summary = next(r for r in h.requests if r.node == "respond/p1/sum")
    assert summary.agent == "worker"
    assert summary.inputs["logs"]["node"] == "respond/p1/fetch"
    assert run.nodes["respond"].output == {"sum": {"node": "respond/p1/sum", "inputs": summary.inputs}}


def test_a_refused_plan_runs_the_fallback_state_machine() -> None:
    out = {"accepted": False, "errors": ["plan.steps[0].tool: tool 'rm' is not one the planner may use"],
           "repairs": 1}
    h = Harness(plan(FLOW), planner(out))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert [n for n, _ in h.executed] == ["respond/plan1", "respond/fallback/page#1", "report"]
    refused = next(e for e in h.events if e.type is EventType.plan_refused)
    assert "not one the planner may use" in refused.data["errors"][0]
    assert run.nodes["respond"].output["state"] == "done"


def test_without_a_fallback_the_step_fails_naming_why() -> None:
    text = FLOW.replace("      fallback: {stateMachine: manual}\n", "")
    h = Harness(plan(text), planner({"accepted": False, "errors": ["plan.steps: the dependsOn make a cycle"]}))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert "PlanRefused" in (run.reason or "") and "cycle" in (run.reason or "")
    assert [n for n, _ in h.executed] == ["respond/plan1"]


def test_a_fallback_approval_waits_for_a_human() -> None:
    text = FLOW.replace("fallback: {stateMachine: manual}", "fallback: {approval: {message: \"no plan, decide\"}}")
    h = Harness(plan(text), planner({"accepted": False, "errors": ["bad"]}))
    h.run_until_blocked()
    assert h.run.nodes["respond/approval"].phase == "Waiting"
    h.post(EventType.approval_decided, "respond/approval", approved=True, by="oncall")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.nodes["respond"].output["decision"]["by"] == "oncall"


def test_a_fallback_approval_keeps_its_notify_settings() -> None:
    text = FLOW.replace("fallback: {stateMachine: manual}",
                        "fallback: {approval: {message: decide, notify: {emails: [oncall@example.com], "
                        "remindEvery: 1h}}}")
    h = Harness(plan(text), planner({"accepted": False, "errors": ["bad"]}))
    h.run_until_blocked()
    approval = h.run.nodes["respond/approval"].plan.spec.approval
    assert approval is not None and approval.notify is not None  # what agentflow.services.notifications reads
    assert approval.notify.emails == ["oncall@example.com"] and approval.notify.remind_every == "1h"


def test_a_plan_over_the_cost_limit_is_refused_before_any_step_runs() -> None:
    h = Harness(plan(FLOW), planner(accepted(GOOD, estimate=5.0)))
    h.run_until_blocked()
    refused = next(e for e in h.events if e.type is EventType.plan_refused)
    assert "maxCostUsd" in refused.data["errors"][0]
    assert not any("/p1/" in n for n, _ in h.executed)


HOSTILE: dict[str, Any] = {
    "cycle": {"steps": [{"name": "a", "kind": "tool", "tool": "logs", "dependsOn": ["b"]},
                        {"name": "b", "kind": "tool", "tool": "logs", "dependsOn": ["a"]}]},
    "unknown tool": {"steps": [{"name": "a", "kind": "tool", "tool": "rm-rf"}]},
    "unknown agent": {"steps": [{"name": "a", "kind": "llm", "agentRef": "root", "promptRef": "summarise"}]},
    "too many steps": {"steps": [{"name": f"s{i}", "kind": "tool", "tool": "logs"} for i in range(5)]},
    "too deep": {"steps": [{"name": f"s{i}", "kind": "tool", "tool": "logs",
                            **({"dependsOn": [f"s{i - 1}"]} if i else {})} for i in range(4)]},
    "malformed JSON": '{"steps": [',
    "wrong types": {"steps": [{"name": "a", "kind": "tool", "tool": 7, "inputs": [], "dependsOn": "x"}]},
    "not an object": [1, 2, 3],
    "plan step inside": {"steps": [{"name": "a", "kind": "plan"}]},
    "bad name": {"steps": [{"name": "../etc", "kind": "tool", "tool": "logs"}]},
    "unknown dependency": {"steps": [{"name": "a", "kind": "tool", "tool": "logs", "dependsOn": ["ghost"]}]},
    "duplicate names": {"steps": [{"name": "a", "kind": "tool", "tool": "logs"},
                                  {"name": "a", "kind": "tool", "tool": "logs"}]},
    "huge": "x" * 300_000,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_plans_get_a_bounded_outcome(case: str) -> None:
    """Whatever a planning attempt posts, the engine refuses it with the reason and runs the fallback."""
    h = Harness(plan(FLOW), planner(accepted(HOSTILE[case])))
    run = h.run_until_blocked()
    refused = [e for e in h.events if e.type is EventType.plan_refused]
    assert len(refused) == 1 and refused[0].data["errors"], case
    assert all(e.startswith("plan") for e in refused[0].data["errors"])
    assert not any("/p1/" in n for n, _ in h.executed)
    assert run.phase == "Succeeded"  # the fallback ran
    assert "respond/fallback/page#1" in [n for n, _ in h.executed]


def test_replay_makes_no_planning_call_and_takes_the_same_path() -> None:
    p = plan(FLOW)
    h = Harness(p, planner(accepted(GOOD)))
    h.run_until_blocked()
    _, events, diff = replay_exact(p, "run-1", h.events)
    assert diff.same_path_and_outputs, diff
    assert sum(1 for e in events if e.type is EventType.plan_accepted) == 1


def test_resume_mid_plan_repeats_no_finished_step() -> None:
    p = plan(FLOW)
    first = Harness(p, planner(accepted(GOOD)))
    while not any(e.type is EventType.step_succeeded and e.node == "respond/p1/fetch" for e in first.events):
        assert first.step()
    calls: list[str] = []
    second = Harness(p, planner(accepted(GOOD), calls), events=first.events)
    run = second.run_until_blocked()
    assert run.phase == "Succeeded"
    assert "respond/plan1" not in calls and "respond/p1/fetch" not in calls
    assert "respond/p1/sum" in calls[:1] or calls[0] == "respond/p1/sum"


def test_a_failing_plan_step_fails_the_plan_step_naming_it() -> None:
    def behaviour(request: StepRequest) -> tuple[float, StepResult]:
        if request.kind == "plan":
            return ok(accepted(GOOD))
        if request.node.endswith("/fetch"):
            return fail("Boom", "logs are gone", retryable=False)
        return ok("x")
    run = Harness(plan(FLOW), behaviour).run_until_blocked()
    assert run.phase == "Failed"
    assert "fetch" in (run.reason or "") and "logs are gone" in (run.reason or "")


REPLAN = FLOW.replace("      repairs: 1\n", "      repairs: 1\n      replan: {every: 1, max: 1}\n")


def test_a_checkpoint_revises_the_steps_not_started() -> None:
    revised = {"steps": [{"name": "page", "kind": "tool", "tool": "pager",
                          "inputs": {"logs": "${{ steps.fetch.output }}"}, "dependsOn": ["fetch"]}]}

    def answer(request: StepRequest) -> Any:
        context = request.context or {}
        if context["planning"]["revision"] == 0:
            return accepted(GOOD)
        assert "fetch" in context["planning"]["results"]
        assert [s["name"] for s in context["planning"]["remaining"]] == ["sum"]
        return accepted(revised)

    h = Harness(plan(REPLAN), planner(answer))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert [n for n, _ in h.executed] == ["respond/plan1", "respond/p1/fetch", "respond/plan2", "respond/p2/page",
                                         "report"]
    assert run.nodes["respond/p1/sum"].phase == "Skipped"
    accepted_events = [e for e in h.events if e.type is EventType.plan_accepted]
    assert [e.data["revision"] for e in accepted_events] == [1, 2]
    assert run.nodes["respond"].output == {"page": {"node": "respond/p2/page", "inputs": {"logs": {
        "node": "respond/p1/fetch", "inputs": {"q": "checkout is down"}}}}}


def test_a_refused_revision_keeps_the_plan() -> None:
    def answer(request: StepRequest) -> Any:
        if (request.context or {})["planning"]["revision"] == 0:
            return accepted(GOOD)
        return accepted({"steps": [{"name": "fetch", "kind": "tool", "tool": "logs"}]})  # reuses a started name

    h = Harness(plan(REPLAN), planner(answer))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert [n for n, _ in h.executed] == ["respond/plan1", "respond/p1/fetch", "respond/plan2", "respond/p1/sum",
                                         "report"]


def test_check_plan_names_the_field_of_every_problem() -> None:
    policy = PlanPolicy.of(PlannerSpec.model_validate({"agents": ["a"], "prompts": ["p"], "tools": ["t"]}))
    _, errors = check_plan(json.dumps({"steps": [{"name": "x", "kind": "llm", "agentRef": "b", "promptRef": "p"},
                                                 {"name": "y", "kind": "tool", "tool": "u", "extra": 1}]}), policy)
    assert errors == ["plan.steps[0].agentRef: Agent 'b' is not one the planner may use (a)",
                      "plan.steps[1].extra: unknown field",
                      "plan.steps[1].tool: tool 'u' is not one the planner may use (t)"]
    assert plan_depth([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]) == 2


def test_cancel_stops_the_plan_and_its_running_steps() -> None:
    h = Harness(plan(FLOW), planner(accepted(GOOD)))
    while not any(e.type is EventType.step_succeeded and e.node == "respond/plan1" for e in h.events):
        assert h.step()
    h.decide()  # accepts the plan and starts its first step
    assert h.run.nodes["respond/p1/fetch"].phase == "Running"
    h.post(EventType.cancel_requested, by="me")
    run = h.run_until_blocked()
    assert run.phase == "Cancelled"
    assert "respond/p1/fetch" in h.cancelled
    assert isinstance(run, Run)


def test_a_plans_tool_with_requires_approval_waits_for_a_human() -> None:
    from agentflow.engine.plan import ToolGate, compile_plan
    from agentflow.engine.planner import gate_key

    from .harness import workflow

    gated = compile_plan(workflow(FLOW), {gate_key("respond", None, "logs"): ToolGate("logs", "ops", None)})
    h = Harness(gated, planner(accepted(GOOD)))
    h.run_until_blocked()
    fetch = h.run.nodes["respond/p1/fetch"]
    assert fetch.phase == "Waiting" and ("respond/p1/fetch", 1) not in h.executed
    requested = next(e for e in h.events if e.type is EventType.approval_requested)
    assert requested.data["gate"]["tool"] == "logs"
    h.post(EventType.approval_decided, "respond/p1/fetch", approved=True, by="oncall")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert ("respond/p1/fetch", 1) in h.executed


def test_a_plans_llm_step_whose_agent_has_tools_runs_its_agent_loop() -> None:
    from agentflow.engine.plan import AgentLoop, LoopTool, compile_plan

    from .harness import workflow

    tools = {"lookup": LoopTool("lookup", {"name": "lookup", "parameters": {"type": "object"}}, policy="p")}
    looped = compile_plan(workflow(FLOW), loops={"worker": AgentLoop("worker", tools)})

    def behaviour(request: StepRequest) -> tuple[float, StepResult]:
        if request.kind == "plan":
            return ok(accepted(GOOD))
        context = request.context or {}
        if "turn" in context:
            assert context["planned"]["promptRef"] == {"name": "summarise"}
            if context["turn"] == 1:
                return ok({"final": False, "message": {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}})
            return ok({"final": True, "value": "summed", "message": {"role": "assistant", "content": "summed"}})
        if "call" in context:
            assert context["planned"]["name"] == "sum" and context["agent"] == "worker"
        return ok({"node": request.node})

    run = Harness(looped, behaviour).run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert [n for n in run.nodes if n.startswith("respond/p1/sum")] == [
        "respond/p1/sum", "respond/p1/sum/t1", "respond/p1/sum/t1/call-1", "respond/p1/sum/t2"]
    assert run.nodes["respond"].output == {"sum": "summed"}


def test_a_plan_step_as_a_states_step() -> None:
    text = """
spec:
  inputs: {incident: "disk full"}
  stateMachine:
    initial: respond
    states:
    - name: respond
      step:
        name: respond
        kind: plan
        agentRef: {name: planner}
        planner: {agents: [worker], prompts: [summarise], tools: [logs]}
      transitions: [{target: done}]
    - {name: done, final: Succeeded}
"""
    h = Harness(plan(text), planner(accepted(GOOD)))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert [n for n, _ in h.executed] == ["respond#1/plan1", "respond#1/p1/fetch", "respond#1/p1/sum"]
    assert all(r.step == "respond" for r in h.requests)
    assert run.outputs == {"respond": {"sum": {"node": "respond#1/p1/sum", "inputs": {"logs": {
        "node": "respond#1/p1/fetch", "inputs": {"q": "disk full"}}}}}}


def test_a_failed_planning_attempt_runs_the_fallback_naming_why() -> None:
    def behaviour(request: StepRequest) -> tuple[float, StepResult]:
        if request.kind == "plan":
            return fail("BudgetExceeded", "the budget is spent", retryable=False)
        return ok("x")

    h = Harness(plan(FLOW), behaviour)
    run = h.run_until_blocked()
    refused = next(e for e in h.events if e.type is EventType.plan_refused)
    assert refused.data["errors"] == ["the planning attempt failed: BudgetExceeded: the budget is spent"]
    assert run.phase == "Succeeded" and "respond/fallback/page#1" in [n for n, _ in h.executed]


def test_checkpoints_are_bounded_by_max() -> None:
    text = FLOW.replace("      repairs: 1\n", "      repairs: 1\n      replan: {every: 1, max: 2}\n")
    chain = {"steps": [{"name": f"s{i}", "kind": "tool", "tool": "logs", **({"dependsOn": [f"s{i - 1}"]} if i else {})}
                       for i in range(3)]}

    def answer(request: StepRequest) -> Any:
        planning = (request.context or {})["planning"]
        if planning["revision"] == 0:
            return accepted(chain)
        return accepted({"steps": planning["remaining"] and [
            {"name": f"r{planning['ask']}", "kind": "tool", "tool": "logs"},
            {"name": f"q{planning['ask']}", "kind": "tool", "tool": "logs", "dependsOn": [f"r{planning['ask']}"]}]})

    h = Harness(plan(text), planner(answer))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    asks = [n for n, _ in h.executed if "/plan" in n]
    assert asks == ["respond/plan1", "respond/plan2", "respond/plan3"]  # the plan, then at most 2 revisions
    assert [e.data["revision"] for e in h.events if e.type is EventType.plan_accepted] == [1, 2, 3]
    assert "PlanFinished" in h.types("respond")
