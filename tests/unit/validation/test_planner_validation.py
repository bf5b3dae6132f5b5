"""Validation of plan steps: every problem names its field, the planner's lists and fallback included."""

from __future__ import annotations

from typing import Any

from agentflow.models import Catalog
from agentflow.validation import validate_body

from .test_validation import API, agent, check, messages_at


def plan_step(**planner: Any) -> dict[str, Any]:
    return {"name": "respond", "kind": "plan", "agentRef": {"name": "planner"}, "inputs": {"goal": "x"},
            "planner": planner}


MACHINE = {"initial": "a", "states": [{"name": "a", "transitions": [{"target": "b"}]},
                                      {"name": "b", "final": "Succeeded"}]}


def test_a_valid_plan_step_has_no_findings() -> None:
    spec = {"steps": [plan_step(fallback={"stateMachine": "manual"})], "fallbackMachines": {"manual": MACHINE}}
    assert check(spec) == []


def test_the_fallback_names_a_declared_state_machine() -> None:
    findings = check({"steps": [plan_step(fallback={"stateMachine": "ghost"})]})
    assert messages_at(findings, ["spec", "steps", 0, "planner", "fallback", "stateMachine"]) == [
        "unknown state machine 'ghost' (declare it in spec.fallbackMachines); there are no fallbackMachines"]


def test_the_planners_agents_prompts_and_tools_exist() -> None:
    catalog = Catalog()
    catalog.add(agent("planner", []))
    findings = check({"steps": [plan_step(agents=["worker"], prompts=["p"], tools=["search"])]}, catalog)
    paths = {".".join(map(str, p)) for p, _ in findings}
    assert paths == {"spec.steps.0.planner.agents.0", "spec.steps.0.planner.prompts.0", "spec.steps.0.planner.tools.0"}


def test_a_fallback_machine_is_checked_like_a_state_machine_and_runs_no_plan_steps() -> None:
    machine = {"initial": "a", "states": [{"name": "a", "step": plan_step(), "transitions": [{"target": "zz"}]}]}
    findings = check({"steps": [plan_step()], "fallbackMachines": {"m": machine}})
    assert messages_at(findings, ["spec", "fallbackMachines", "m", "states", 0, "step", "kind"]) == [
        "a fallback state machine runs no plan steps"]
    assert messages_at(findings, ["spec", "fallbackMachines", "m", "states", 0, "transitions", 0, "target"])


def test_parse_problems_name_the_field() -> None:
    body = {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "wf"}, "spec": {"steps": [
        {"name": "p", "kind": "plan", "agentRef": {"name": "a"}},
        {"name": "q", "kind": "plan", "agentRef": {"name": "a"},
         "planner": {"limits": {"maxSteps": 500}, "fallback": {}, "kinds": ["plan"]}},
        {"name": "r", "kind": "tool", "tool": "t", "planner": {}}]}}
    problems = {p.path: p.message for p in validate_body(body)}
    assert problems["spec.steps[0]"] == "a plan step needs agentRef and planner"
    assert "spec.steps[1].planner.limits.maxSteps" in problems
    assert "spec.steps[1].planner.fallback" in problems
    assert "spec.steps[1].planner.kinds[0]" in problems
    assert problems["spec.steps[2]"] == "planner is only allowed on plan steps, not tool steps"


def test_tools_a_plan_may_call_with_requires_approval_are_gated() -> None:
    from agentflow.engine.planner import gate_key
    from agentflow.models import ToolPolicy
    from agentflow.validation.grants import approval_gates

    from .test_validation import workflow

    catalog = Catalog()
    catalog.add(agent("worker", ["deploy", "search"], {"team": "ops"}))
    catalog.add(ToolPolicy.model_validate({"apiVersion": API, "kind": "ToolPolicy", "metadata": {"name": "ops"},
                                           "spec": {"agentSelector": {"matchLabels": {"team": "ops"}}, "tools": [
                                               {"name": "deploy", "builtin": {"name": "echo"},
                                                "requiresApproval": True},
                                               {"name": "search", "builtin": {"name": "echo"}}]}}))
    spec = workflow({"steps": [plan_step(agents=["worker"], tools=["deploy", "search"])]}).spec
    gates = approval_gates(spec, catalog)
    assert set(gates) == {gate_key("respond", "worker", "deploy"), gate_key("respond", None, "deploy")}
