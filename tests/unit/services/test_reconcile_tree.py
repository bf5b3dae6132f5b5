"""The operator runs a behavior tree like any Workflow: one pod per leaf attempt, exactly once across restarts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from agentflow.engine.values import StepError, StepResult
from agentflow.k8s.kube import KubeError

from .test_reconcile import Cluster, catalog, workflow

TREE = {
    "inputs": {"text": "hello"},
    "behaviorTree": {"type": "sequence", "children": [
        {"type": "parallel", "children": [
            {"type": "step", "step": {"name": "left", "kind": "tool", "tool": "echo"}},
            {"type": "step", "step": {"name": "right", "kind": "tool", "tool": "echo"}}]},
        {"type": "selector", "children": [
            {"type": "retry", "limit": 1, "child": {
                "type": "step", "step": {"name": "flaky", "kind": "tool", "tool": "echo",
                                         "inputs": {"text": "${{ inputs.text }}"}}}},
            {"type": "step", "step": {"name": "fallback", "kind": "tool", "tool": "echo"}}]},
        {"type": "step", "step": {"name": "last", "kind": "tool", "tool": "echo",
                                  "inputs": {"got": "${{ steps.flaky.output.text }}"}}}]},
}


def flaky_once(node: str, attempt: int, inputs: Mapping[str, Any]) -> StepResult | str:
    if node == "flaky#1":
        return StepResult(error=StepError("Boom", "first run fails", retryable=False))
    return StepResult(output={"node": node, **inputs})


async def test_a_behavior_tree_runs_on_the_operator() -> None:
    c = Cluster(flaky_once)
    outcome = await c.run(workflow(TREE))
    assert outcome.phase == "Succeeded"
    assert sorted(c.executions) == [("flaky#1", 1), ("flaky#2", 1), ("last#1", 1), ("left#1", 1), ("right#1", 1)]
    assert len(c.kube.created) == len(set(c.kube.created)) == 5
    final = c.kube.statuses[-1]
    assert final["phase"] == "Succeeded"
    assert final["nodes"]["flaky#1"]["phase"] == "Failed" and final["nodes"]["flaky#2"]["phase"] == "Succeeded"
    last = c.store.attempts[("0b5e7c1a-0000-4000-8000-000000000001", "last#1", 1)]["request"]
    assert last["step"] == "last" and last["inputs"] == {"got": "hello"}


@pytest.mark.parametrize("crash_after", range(1, 7))
async def test_a_restarted_operator_never_runs_a_leaf_twice(crash_after: int) -> None:
    c = Cluster(flaky_once)
    body = workflow(TREE)
    for i in range(crash_after):
        if i == crash_after - 1:
            c.kube.fail_creates = 1
        try:
            await c.reconciler.reconcile(body, catalog())
        except KubeError:
            break
        c.kubelet()
        c.now += 1.0
    c.reconciler = c.new_reconciler()
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"
    assert len(c.executions) == len(set(c.executions)) == 5
