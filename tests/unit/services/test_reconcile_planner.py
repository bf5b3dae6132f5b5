"""The operator runs a plan step like any step: its planning attempt and the steps of its plan are pods of
their own (ids ``STEP/planN``, ``STEP/pN/NAME``), each once across restarts, and a plan's tool step gets the
same tool decision as a manifest's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentflow.engine.values import StepResult
from agentflow.models import Agent, Catalog

from .test_reconcile import Cluster, catalog, workflow

PLAN = {"steps": [
    {"name": "fetch", "kind": "tool", "tool": "echo", "inputs": {"q": "${{ inputs.goal }}"}},
    {"name": "use", "kind": "tool", "tool": "echo", "inputs": {"got": "${{ steps.fetch.output.q }}"},
     "dependsOn": ["fetch"]},
]}

SPEC = {
    "inputs": {"goal": "restart checkout"},
    "steps": [
        {"name": "plan", "kind": "plan", "agentRef": {"name": "planner"}, "inputs": {"goal": "${{ inputs.goal }}"},
         "planner": {"tools": ["echo"], "kinds": ["tool"]}},
        {"name": "after", "kind": "tool", "tool": "echo", "dependsOn": ["plan"],
         "inputs": {"plan": "${{ steps.plan.output }}"}},
    ],
}


def with_planner() -> Catalog:
    c = catalog()
    c.add(Agent.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent",
                                "metadata": {"name": "planner", "namespace": "team"},
                                "spec": {"role": "planner", "model": {"name": "agentflow/offline"}}}))
    return c


def behaviour(node: str, attempt: int, inputs: Mapping[str, Any]) -> StepResult:
    if node == "plan/plan1":
        return StepResult(output={"accepted": True, "plan": PLAN, "estimateUsd": 0.0, "repairs": 0})
    return StepResult(output={"node": node, **inputs})


async def run(c: Cluster, body: dict[str, Any], rounds: int = 30) -> Any:
    outcome = None
    for _ in range(rounds):
        outcome = await c.reconciler.reconcile(body, with_planner())
        if outcome.finished:
            return outcome
        c.kubelet()
        c.now += 1.0
    return outcome


async def test_a_plan_step_expands_and_runs_on_the_operator() -> None:
    c = Cluster(behaviour)
    outcome = await run(c, workflow(SPEC))
    assert outcome.phase == "Succeeded"
    assert c.executions == [("plan/plan1", 1), ("plan/p1/fetch", 1), ("plan/p1/use", 1), ("after", 1)]
    assert len(c.kube.created) == len(set(c.kube.created)) == 4
    uid = "0b5e7c1a-0000-4000-8000-000000000001"
    planning = c.store.attempts[(uid, "plan/plan1", 1)]["request"]
    assert planning["kind"] == "plan" and planning["step"] == "plan" and planning["inputs"] == {
        "goal": "restart checkout"}
    use = c.store.attempts[(uid, "plan/p1/use", 1)]["request"]
    assert use["step"] == "plan" and use["kind"] == "tool" and use["inputs"] == {"got": "restart checkout"}
    assert use["context"]["planned"]["tool"] == "echo"
    final = c.kube.statuses[-1]
    assert final["nodes"]["plan/p1/use"]["phase"] == "Succeeded"
    after = c.store.attempts[(uid, "after", 1)]["request"]
    assert after["inputs"]["plan"] == {"use": {"node": "plan/p1/use", "got": "restart checkout"}}


async def test_a_restarted_operator_runs_no_step_of_the_plan_twice() -> None:
    c = Cluster(behaviour)
    body = workflow(SPEC)
    for _ in range(3):
        await c.reconciler.reconcile(body, with_planner())
        c.kubelet()
        c.now += 1.0
    c.reconciler = c.new_reconciler()
    outcome = await run(c, body)
    assert outcome.phase == "Succeeded"
    assert len(c.executions) == len(set(c.executions)) == 4
