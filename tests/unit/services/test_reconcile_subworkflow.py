"""Workflow steps in the reconciler: one child Workflow per attempt (named, owned, labelled, in the parent's
namespace), its outputs and cost back in the parent, its failure retried with a new child, the parent's cancel and
suspension passed on, the depth limit, its tokens in the parent's, and a Workflow that is not the child never taken
for it. The child runs through the same reconciler against the shipped FakeKube, as it would on a cluster."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from agentflow.engine.values import CallRecord, StepResult
from agentflow.k8s import subworkflow
from agentflow.models import Catalog, WorkflowTemplate, parse_resource

from .test_reconcile import Cluster, catalog, workflow

PARENT_UID = "0b5e7c1a-0000-4000-8000-000000000001"
TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "digest", "namespace": "team", "uid": "t-1", "generation": 1, "resourceVersion": "5"},
    "spec": {"inputs": {"topic": "incidents"},
             "inputSchema": {"type": "object", "properties": {"topic": {"type": "string"}},
                             "additionalProperties": False},
             "steps": [{"name": "draft", "kind": "tool", "tool": "echo", "inputs": {"t": "${{ inputs.topic }}"}}],
             "outputs": {"summary": "steps.draft.output.t"}},
}
PARENT = {
    "inputs": {"topic": "upgrades"},
    "steps": [
        {"name": "sub", "kind": "workflow", "workflowTemplateRef": {"name": "digest"},
         "inputs": {"topic": "${{ inputs.topic }} weekly"}},
        {"name": "after", "kind": "tool", "tool": "echo", "dependsOn": ["sub"],
         "inputs": {"got": "${{ steps.sub.output.summary }}"}},
    ],
}


def with_template() -> Catalog:
    c = catalog()
    template = parse_resource(TEMPLATE)
    assert isinstance(template, WorkflowTemplate)
    c.add(template)
    return c


def priced(node: str, attempt: int, inputs: Mapping[str, Any]) -> StepResult:
    """Every attempt echoes its inputs and costs 0.25 USD and 15 tokens."""
    return StepResult(output={"node": node, **inputs}, calls=(
        CallRecord("llm", "m", "h", "x", input_tokens=10, output_tokens=5, cost_usd=0.25),))


class Family(Cluster):
    """The cluster with a parent Workflow and whatever children its workflow steps make, reconciled in turn."""

    def parent(self) -> dict[str, Any]:
        return self.kube.resources[("workflows", "team", "wf")]

    def children(self) -> list[dict[str, Any]]:
        return [o for (plural, _, _), o in sorted(self.kube.resources.items()) if plural == "workflows"
                and (o["metadata"].get("labels") or {}).get(subworkflow.PARENT_RUN_LABEL) == PARENT_UID]

    async def round(self, *, kubelet: bool = True) -> Any:
        outcome = await self.reconciler.reconcile(self.parent(), with_template())
        for child in self.children():
            if child["metadata"]["uid"].startswith("uid-"):  # the fake's; the API server gives a UUID
                child["metadata"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, child["metadata"]["name"]))
            if (child.get("status") or {}).get("phase") not in subworkflow.FINISHED:
                await self.reconciler.reconcile(child, with_template())
        if kubelet:
            self.kubelet()
        self.now += 1.0
        return outcome

    async def until_finished(self, rounds: int = 40) -> Any:
        for _ in range(rounds):
            outcome = await self.round()
            if outcome.finished:
                return outcome
        raise AssertionError("the parent did not finish")


async def test_a_workflow_step_runs_its_template_as_one_owned_child_and_gets_its_outputs_and_cost() -> None:
    c = Family(priced)
    c.kube.add_resource(workflow(PARENT))
    outcome = await c.until_finished()
    assert outcome.phase == "Succeeded"
    [child] = c.children()
    name = subworkflow.child_name("wf", "sub", 1)
    meta = child["metadata"]
    assert meta["name"] == name and meta["namespace"] == "team"
    assert meta["ownerReferences"] == [{"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "name": "wf",
                                        "uid": PARENT_UID, "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"][subworkflow.PARENT_LABEL] == "wf" and meta["labels"][subworkflow.DEPTH_LABEL] == "1"
    assert child["spec"] == {"workflowTemplateRef": {"name": "digest", "kind": "WorkflowTemplate"},
                             "inputs": {"topic": "upgrades weekly"}}
    assert child["status"]["phase"] == "Succeeded" and child["status"]["outputs"] == {"summary": "upgrades weekly"}
    status = c.parent()["status"]
    assert status["nodes"]["sub"]["workflow"] == {"name": name, "phase": "Succeeded"}
    # the child's step (0.25) rolled up into the step and the parent, plus the parent's own step (0.25)
    assert status["nodes"]["sub"]["costUsd"] == 0.25
    assert status["costUsd"] == 0.5
    assert child["status"]["tokens"] == 15 and status["tokens"] == 30  # its tokens too, as a total
    after = c.store.attempts[(PARENT_UID, "after", 1)]["request"]["inputs"]
    assert after == {"got": "upgrades weekly"}


async def test_the_child_is_made_once_per_attempt_across_passes_and_a_restart() -> None:
    c = Family()
    c.kube.add_resource(workflow(PARENT))
    await c.round(kubelet=False)
    await c.round(kubelet=False)
    c.reconciler = c.new_reconciler()  # an operator restart: the run is loaded from its journal
    await c.round(kubelet=False)
    assert [r for r in c.kube.resources_created if r.startswith("workflows/")] == \
        [f"workflows/{subworkflow.child_name('wf', 'sub', 1)}"]
    running = c.parent()["status"]["nodes"]["sub"]
    assert running["phase"] == "Running" and running["workflow"]["phase"] == "Running"


async def test_a_failed_child_is_retried_with_a_new_child_and_then_fails_the_step() -> None:
    c = Family(lambda node, attempt, inputs: StepResult(output={"t": "x"}) if node == "after" else "OOMKilled")
    spec = {**PARENT, "steps": [{**PARENT["steps"][0], "retry": {"limit": 1, "backoff": {"initialSeconds": 0}}},
                                PARENT["steps"][1]]}
    c.kube.add_resource(workflow(spec))
    outcome = await c.until_finished()
    assert outcome.phase == "Failed"
    assert [o["metadata"]["name"] for o in c.children()] == sorted(
        [subworkflow.child_name("wf", "sub", 1), subworkflow.child_name("wf", "sub", 2)])
    node = c.parent()["status"]["nodes"]["sub"]
    assert node["attempts"] == 2 and "SubWorkflowFailed" in node["message"]
    assert node["workflow"] == {"name": subworkflow.child_name("wf", "sub", 2), "phase": "Failed"}


async def test_cancelling_the_parent_cancels_its_running_child() -> None:
    c = Family()
    c.kube.add_resource(workflow(PARENT))
    await c.round(kubelet=False)
    await c.round(kubelet=False)  # the child runs: its step pod made, not finished
    [child] = c.children()
    assert child["status"]["phase"] == "Running"
    c.parent()["spec"]["cancel"] = True
    outcome = await c.round(kubelet=False)
    assert outcome.finished and outcome.phase == "Cancelled"
    [child] = c.children()
    assert child["spec"]["cancel"] is True
    await c.reconciler.reconcile(child, with_template())
    assert c.children()[0]["status"]["phase"] == "Cancelled"


async def test_suspending_the_parent_suspends_its_running_child_and_resuming_it_resumes_only_that_one() -> None:
    c = Family()
    c.kube.add_resource(workflow(PARENT))
    await c.round(kubelet=False)
    await c.round(kubelet=False)  # the child runs
    c.parent()["spec"]["suspend"] = True
    await c.round(kubelet=False)
    [child] = c.children()
    assert child["spec"]["suspend"] is True
    assert child["metadata"]["annotations"][subworkflow.SUSPENDED_BY_PARENT] == "wf"
    patches = len(c.kube.patches)
    await c.round(kubelet=False)  # nothing changed: nothing written again
    assert len(c.kube.patches) == patches
    c.parent()["spec"]["suspend"] = False
    await c.round(kubelet=False)
    [child] = c.children()
    assert child["spec"]["suspend"] is False and subworkflow.SUSPENDED_BY_PARENT not in child["metadata"].get(
        "annotations", {})
    child["spec"]["suspend"] = True  # suspended by its user, not by the parent: the parent leaves it so
    await c.round(kubelet=False)
    assert c.children()[0]["spec"]["suspend"] is True
    c.parent()["spec"]["suspend"] = True
    await c.round(kubelet=False)
    c.parent()["spec"]["suspend"] = False
    await c.round(kubelet=False)
    assert c.children()[0]["spec"]["suspend"] is True


async def test_a_run_at_the_depth_limit_starts_no_child() -> None:
    c = Family()
    body = workflow(PARENT)
    body["metadata"]["labels"] = {subworkflow.DEPTH_LABEL: "5"}
    c.kube.add_resource(body)
    outcome = await c.until_finished()
    assert outcome.phase == "Failed"
    assert not c.children()
    node = c.parent()["status"]["nodes"]["sub"]
    assert "WorkflowDepthExceeded" in node["message"] and "--max-workflow-depth 5" in node["message"]
    assert "workflow" not in node


async def test_a_workflow_under_the_child_name_that_is_not_the_child_is_left_alone() -> None:
    c = Family()
    c.kube.add_resource(workflow(PARENT))
    squatter = workflow({"steps": [{"name": "x", "kind": "tool", "tool": "echo"}]})
    squatter["metadata"].update(name=subworkflow.child_name("wf", "sub", 1), uid="someone-else")
    c.kube.add_resource(squatter)
    await c.reconciler.reconcile(c.parent(), with_template())
    outcome = await c.reconciler.reconcile(c.parent(), with_template())
    assert outcome.phase == "Failed"
    assert "WorkflowConflict" in c.parent()["status"]["nodes"]["sub"]["message"]
    left = c.kube.resources[("workflows", "team", subworkflow.child_name("wf", "sub", 1))]
    assert left["metadata"]["uid"] == "someone-else" and left["spec"] == squatter["spec"]
    assert [r for r in c.kube.resources_created if r.startswith("workflows/")] == []
