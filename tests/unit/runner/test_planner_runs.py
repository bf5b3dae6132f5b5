"""Plan steps run by the local runner with the offline model (examples/manifests/incident-planner.yaml): the
planner's plan is checked like a manifest, repaired within its bound, refused past its cost limit, and a refused
plan runs the fallback state machine; replay and resume make no planning call again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.values import EventType, StepRequest, StepResult
from agentflow.executors import InProcessExecutor, StepServices
from agentflow.gateway.local import local_gateway
from agentflow.llm import offline_provider
from agentflow.loader import load_documents
from agentflow.models import Agent, Catalog, Workflow
from agentflow.models.manifests import parse_documents
from agentflow.runner.replay import replay_exact
from agentflow.runner.session import Bundle, create_run, drive, plan_of
from agentflow.runner.store import RunStore
from agentflow.tools import ToolRunner

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "manifests" / "incident-planner.yaml"

VALID = {"steps": [
    {"name": "logs", "kind": "tool", "tool": "incident-logs", "agentRef": "incident-worker",
     "inputs": {"query": "$${{ inputs.incident }}"}},
    {"name": "summarise", "kind": "llm", "agentRef": "incident-worker", "promptRef": "incident-summarise-v1",
     "inputs": {"incident": "$${{ inputs.incident }}", "logs": "$${{ steps.logs.output }}"}, "dependsOn": ["logs"]},
]}


def load(*answers: Any) -> tuple[Workflow, Catalog]:
    """The example, its planner answering ``answers`` on successive turns (the offline model's directive)."""
    loaded = parse_documents(load_documents([EXAMPLE]))
    workflow = next(r.resource for r in loaded if isinstance(r.resource, Workflow))
    catalog = Catalog()
    for r in loaded:
        resource = r.resource
        if isinstance(resource, Agent) and resource.metadata.name == "incident-planner" and answers:
            text = "\n".join(f"[[answer]]{a if isinstance(a, str) else json.dumps(a)}[[/answer]]" for a in answers)
            resource = resource.model_copy(update={"spec": resource.spec.model_copy(update={
                "instructions": "Plan the response.\n" + text})})
        if not isinstance(resource, Workflow):
            catalog.add(resource)
    return workflow, catalog


class Counting:
    """The in-process executor, counting what it is asked."""

    def __init__(self, services: StepServices) -> None:
        self.inner = InProcessExecutor(services)
        self.nodes: list[str] = []
        self.results: dict[str, StepResult] = {}

    async def execute(self, request: StepRequest) -> StepResult:
        self.nodes.append(request.node)
        result = await self.inner.execute(request)
        self.results[request.node] = result
        return result

    async def aclose(self) -> None:
        return None


async def run(tmp_path: Path, workflow: Workflow, catalog: Catalog, prices: Any = None) -> tuple[Any, Counting]:
    bundle = Bundle(workflow, catalog, EXAMPLE.read_text())
    services = StepServices(catalog, workflow.spec, local_gateway(workflow, catalog, offline_provider()), ToolRunner(),
                            prices=prices)
    executor = Counting(services)
    run_dir = create_run(RunStore(tmp_path / "runs"), bundle, [EXAMPLE])
    result = await drive(run_dir, bundle, executor)
    return result, executor


def planning(executor: Counting) -> dict[str, Any]:
    output = executor.results["respond/plan1"].output
    assert isinstance(output, dict)
    return output


async def test_the_offline_planners_valid_plan_runs(tmp_path: Path) -> None:
    workflow, catalog = load()
    result, executor = await run(tmp_path, workflow, catalog)
    assert result.phase == "Succeeded", result.reason
    assert executor.nodes == ["respond/plan1", "respond/p1/logs", "respond/p1/summarise", "respond/p1/page", "report"]
    assert planning(executor)["accepted"] is True
    assert set(result.nodes["respond"].output) == {"page"}


async def test_an_invalid_plan_is_repaired_with_its_errors(tmp_path: Path) -> None:
    bad = {"steps": [{"name": "logs", "kind": "tool", "tool": "rm-rf"}]}
    workflow, catalog = load(bad, VALID)
    result, executor = await run(tmp_path, workflow, catalog)
    assert result.phase == "Succeeded", result.reason
    out = planning(executor)
    assert out["accepted"] is True and out["repairs"] == 1
    calls = executor.results["respond/plan1"].calls
    assert len(calls) == 2  # the plan, then the repair
    assert "respond/p1/summarise" in executor.nodes


async def test_an_invalid_plan_after_its_repairs_runs_the_fallback_state_machine(tmp_path: Path) -> None:
    ungranted = {"steps": [{"name": "record", "kind": "tool", "tool": "incident-record"}]}
    workflow, catalog = load(ungranted)
    result, executor = await run(tmp_path, workflow, catalog)
    out = planning(executor)
    assert out["accepted"] is False and out["repairs"] == 1
    assert any("plan.steps[0].tool" in e and "not one the planner may use" in e for e in out["errors"])
    assert len(executor.results["respond/plan1"].calls) == 2
    assert result.phase == "Succeeded", result.reason
    assert executor.nodes == ["respond/plan1", "respond/fallback/page#1", "report"]
    assert result.nodes["respond"].output["fallback"] == "manual-runbook"


async def test_a_tool_the_planner_lists_but_the_agent_is_not_granted_is_refused(tmp_path: Path) -> None:
    """The SAME tool decision as a manifest's (agentflow.validation.grants via check_workflow)."""
    workflow, catalog = load({"steps": [{"name": "logs", "kind": "tool", "tool": "incident-logs",
                                         "agentRef": "incident-planner"}]})
    step = workflow.spec.steps[0]
    assert step.planner is not None
    planner = step.planner.model_copy(update={"agents": ["incident-worker", "incident-planner"]})
    steps = [step.model_copy(update={"planner": planner}), *workflow.spec.steps[1:]]
    workflow = workflow.model_copy(update={"spec": workflow.spec.model_copy(update={"steps": steps})})
    _, executor = await run(tmp_path, workflow, catalog)
    out = planning(executor)
    assert out["accepted"] is False
    assert any(e.startswith("plan.steps[0].tool:") and "does not list tool 'incident-logs'" in e
               for e in out["errors"]), out["errors"]


async def test_a_plan_over_its_cost_limit_is_refused_before_any_step_runs(tmp_path: Path) -> None:
    workflow, catalog = load(VALID)
    result, executor = await run(tmp_path, workflow, catalog, prices=lambda model: (0.01, 0.03))
    out = planning(executor)
    assert out["accepted"] is False
    assert any("maxCostUsd" in e for e in out["errors"]), out["errors"]
    assert not any("/p1/" in node for node in executor.nodes)
    assert result.phase == "Succeeded"  # the fallback paged the on-call engineer


@pytest.mark.parametrize(("answer", "reason"), [
    ('{"steps": [', "plan: not JSON"),
    ({"steps": [{"name": "a", "kind": "tool", "tool": 7}]}, "plan.steps[0].tool: must be a string"),
    ({"steps": [{"name": "a", "kind": "tool", "tool": "incident-logs", "agentRef": "incident-worker",
                 "dependsOn": ["b"]},
                {"name": "b", "kind": "tool", "tool": "incident-logs", "agentRef": "incident-worker",
                 "dependsOn": ["a"]}]}, "make a cycle"),
    ({"steps": [{"name": f"s{i}", "kind": "tool", "tool": "incident-logs", "agentRef": "incident-worker"}
                for i in range(6)]}, "more than planner.limits.maxSteps 5"),
    ({"steps": [{"name": f"s{i}", "kind": "tool", "tool": "incident-logs", "agentRef": "incident-worker",
                 **({"dependsOn": [f"s{i - 1}"]} if i else {})} for i in range(4)]}, "deeper than planner.limits"),
    ({"steps": [{"name": "a", "kind": "approval", "message": "ok?"}]}, "plan.steps[0].kind: 'approval' is not"),
    ({"steps": [{"name": "a", "kind": "llm", "agentRef": "incident-worker", "promptRef": "nope"}]},
     "plan.steps[0].promptRef"),
])
async def test_hostile_plans_end_in_the_fallback_with_the_reason(tmp_path: Path, answer: Any, reason: str) -> None:
    workflow, catalog = load(answer)
    result, executor = await run(tmp_path, workflow, catalog)
    out = planning(executor)
    assert out["accepted"] is False
    assert any(reason in e for e in out["errors"]), out["errors"]
    assert result.phase == "Succeeded" and "respond/fallback/page#1" in executor.nodes


async def test_replay_and_resume_make_no_planning_call(tmp_path: Path) -> None:
    workflow, catalog = load()
    result, _ = await run(tmp_path, workflow, catalog)
    run_dir = RunStore(tmp_path / "runs").open(result.run_id)
    events = [r.event for r in run_dir.read_records()]
    bundle = Bundle(workflow, catalog, EXAMPLE.read_text())
    _, replayed, diff = replay_exact(plan_of(bundle), result.run_id, events)
    assert diff.same_path_and_outputs
    assert [e.node for e in replayed if e.type is EventType.plan_accepted] == ["respond"]
    # resume from the journal cut after the plan's first step succeeded: nothing that finished runs again
    cut = next(i for i, e in enumerate(events) if e.type is EventType.step_succeeded and e.node == "respond/p1/logs")
    journal = run_dir.path / "journal.jsonl"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:cut + 1]))
    services = StepServices(catalog, workflow.spec, local_gateway(workflow, catalog, offline_provider()), ToolRunner())
    executor = Counting(services)
    resumed = await drive(RunStore(tmp_path / "runs").open(result.run_id), bundle, executor)
    assert resumed.phase == "Succeeded", resumed.reason
    assert executor.nodes == ["respond/p1/summarise", "respond/p1/page", "report"]
