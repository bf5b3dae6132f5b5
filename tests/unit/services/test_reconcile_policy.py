"""The reconcile of tool steps: grants decided before anything is created, NetworkPolicies, approval gates,
the namespace step quota and the audit events (issue 6)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest

from agentflow.audit.records import AuditEvent
from agentflow.k8s import names
from agentflow.k8s.kube import KubeError
from agentflow.k8s.podspec import PodConfig
from agentflow.models import Agent, Budget, Catalog, ToolPolicy
from agentflow.services.reconcile import WorkflowReconciler
from agentflow.testing import SIGNING_KEY, decided_by

from .test_reconcile import Cluster, workflow

UID = "0b5e7c1a-0000-4000-8000-000000000001"


class MemoryAudit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append(self, events: Sequence[AuditEvent]) -> None:
        self.events.extend(events)


def policy(name: str, tools: list[dict[str, Any]], selector: dict[str, str] | None = None,
           runtime: str | None = None) -> ToolPolicy:
    spec: dict[str, Any] = {"agentSelector": {"matchLabels": selector or {}}, "tools": tools}
    if runtime:
        spec["runtimeClassName"] = runtime
    return ToolPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def agent(name: str, labels: dict[str, str], tools: list[str]) -> Agent:
    return Agent.model_validate({"metadata": {"name": name, "labels": labels},
                                 "spec": {"role": "r", "model": {"name": "offline/echo"}, "tools": tools}})


FETCH = {"name": "fetch", "http": {"url": "http://10.88.0.1:18080/lookup", "method": "GET"},
         "permissions": {"env": {"REGION": "eu"}, "egressHosts": ["api.example.com:443"]},
         "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}}


def catalog(*extra: Agent | ToolPolicy | Budget) -> Catalog:
    c = Catalog()
    c.add(policy("net-tools", [FETCH, {"name": "pay", "builtin": {"name": "echo"}, "requiresApproval": True,
                                       "approvalTimeoutSeconds": 600}], {"team": "research"}, "kata"))
    c.add(policy("ops-tools", [{"name": "echo", "builtin": {"name": "echo"}}], {"team": "ops"}))
    c.add(agent("researcher", {"team": "research"}, ["fetch", "pay", "echo"]))
    for r in extra:
        c.add(r)
    return c


class PolicyCluster(Cluster):
    def __init__(self, cat: Catalog, *, gateway: str | None = None) -> None:
        self.audit = MemoryAudit()
        self.gateway = gateway
        super().__init__()
        self.cat = cat

    def new_reconciler(self) -> WorkflowReconciler:
        config = PodConfig(image="runtime:dev", callback_url="http://10.88.0.1:8081", gateway_url=self.gateway)
        return WorkflowReconciler(self.kube, self.store, config, signing_key=SIGNING_KEY,
                                  clock=lambda: self.now, audit=self.audit)

    async def pass_(self, body: dict[str, Any]) -> Any:
        return await self.reconciler.reconcile(body, self.cat)

    async def run(self, body: dict[str, Any], rounds: int = 50) -> Any:
        outcome = None
        for _ in range(rounds):
            outcome = await self.pass_(body)
            if outcome.finished:
                return outcome
            self.kubelet()
            self.now += 1.0
        return outcome


def steps(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(specs)}


async def test_a_denied_tool_fails_the_step_at_once_without_a_pod_or_network_policy() -> None:
    c = PolicyCluster(catalog())
    body = workflow(steps({"name": "run-echo", "kind": "tool", "tool": "echo", "agentRef": {"name": "researcher"}},
                          {"name": "after", "kind": "tool", "tool": "echo", "dependsOn": ["run-echo"]}))
    outcome = await c.pass_(body)
    assert outcome.finished and outcome.phase == "Failed"
    assert c.kube.created == [] and c.kube.netpols == {} and c.store.attempts == {}
    node = c.reconciler.runs[UID].run.nodes["run-echo"]
    assert node.error is not None and (node.error.type, node.error.retryable) == ("ToolNotAllowed", False)
    for word in ("'researcher'", "'echo'", "ops-tools", "net-tools"):
        assert word in node.error.message
    status = c.kube.statuses[-1]
    assert status["phase"] == "Failed" and "ToolNotAllowed" in status["message"] and "ops-tools" in status["message"]
    failed = [e for e in c.kube.events if e["reason"] == "StepFailed"]
    assert failed and "'researcher'" in failed[0]["message"] and "ops-tools" in failed[0]["message"]
    (deny,) = [e for e in c.audit.events if e.kind == "policy_decision"]
    assert (deny.decision, deny.data["tool"], deny.data["agent"]) == ("deny", "echo", "researcher")
    assert deny.data["policiesConsidered"] == ["net-tools", "ops-tools"]
    assert deny.subject == "team/wf/run-echo#1"


async def test_an_allowed_tool_gets_its_network_policy_before_its_pod_and_loses_it_with_the_pod() -> None:
    c = PolicyCluster(catalog())
    body = workflow(steps({"name": "look", "kind": "tool", "tool": "fetch", "agentRef": {"name": "researcher"}}))
    await c.pass_(body)
    (pod_name,) = c.kube.created
    pod = c.kube.pods[pod_name]
    netpol = c.kube.netpols[pod_name]
    assert pod["spec"]["runtimeClassName"] == "kata"
    container = pod["spec"]["containers"][0]
    assert {"name": "REGION", "value": "eu"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"cpu": "1", "memory": "256Mi"}}
    assert netpol["spec"]["podSelector"] == {"matchLabels": {names.POD_LABEL: pod_name}}
    assert netpol["spec"]["ingress"] == [] and netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = netpol["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.88.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 8081}]} in egress
    assert {"to": [{"ipBlock": {"cidr": "10.88.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 18080}]} in egress
    assert netpol["metadata"]["annotations"][names.EGRESS_HOSTS_ANNOTATION] == "api.example.com:443"
    assert netpol["metadata"]["ownerReferences"][0]["uid"] == UID
    assert pod["metadata"]["annotations"][names.NETWORK_POLICY_ANNOTATION] == pod_name
    assert pod["metadata"]["labels"][names.ISOLATED_LABEL] == "true"  # under the namespace's baseline too
    assert c.kube.netpols_created == [names.BASELINE_POLICY, pod_name]  # both before the pod
    (allow,) = [e for e in c.audit.events if e.kind == "policy_decision"]
    assert (allow.decision, allow.data["policy"], allow.data["agent"]) == ("allow", "net-tools", "researcher")
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"
    assert set(c.kube.netpols) == {names.BASELINE_POLICY} and c.kube.netpols_deleted == [pod_name]


async def test_a_tool_granted_no_egress_is_under_the_baseline_only_which_is_made_once_per_namespace() -> None:
    c = PolicyCluster(catalog())
    bodies = [workflow(steps({"name": "say", "kind": "tool", "tool": "echo", "agentRef": {"name": "ops"}}))
              for _ in range(3)]
    for i, body in enumerate(bodies):
        body["metadata"]["name"], body["metadata"]["uid"] = f"wf-{i}", f"{UID[:-1]}{i}"
    c.cat.add(agent("ops", {"team": "ops"}, ["echo"]))
    writes = [(await c.pass_(body)).api_writes for body in bodies]
    assert c.kube.netpols_created == [names.BASELINE_POLICY]  # no policy of their own: nothing beyond the platform
    assert writes[1] == writes[2] == writes[0] - 1  # the baseline's create, once
    baseline = c.kube.netpols[names.BASELINE_POLICY]
    assert baseline["spec"]["podSelector"] == {"matchLabels": {
        names.MANAGED_BY_LABEL: names.MANAGED_BY, names.COMPONENT_LABEL: names.COMPONENT_STEP,
        names.ISOLATED_LABEL: "true"}}
    assert baseline["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "10.88.0.1/32"}}],
                                           "ports": [{"protocol": "TCP", "port": 8081}]}]  # the callback only
    assert "ownerReferences" not in baseline["metadata"]
    for name in c.kube.created:
        pod = c.kube.pods[name]
        assert pod["metadata"]["labels"][names.ISOLATED_LABEL] == "true"
        assert names.NETWORK_POLICY_ANNOTATION not in pod["metadata"]["annotations"]
    for body in bodies:
        assert (await c.run(body)).phase == "Succeeded"
    assert not c.kube.pods and c.kube.netpols_deleted == []  # pods deleted, no policy of theirs to delete
    assert set(c.kube.netpols) == {names.BASELINE_POLICY}  # kept for the next step pods


async def test_a_step_pod_is_not_created_while_the_baseline_cannot_be() -> None:
    c = PolicyCluster(catalog())
    c.cat.add(agent("ops", {"team": "ops"}, ["echo"]))
    body = workflow(steps({"name": "say", "kind": "tool", "tool": "echo", "agentRef": {"name": "ops"}}))

    async def refused(namespace: str, body: Any) -> None:
        raise KubeError("create networkpolicy: 403 Forbidden", 403)

    c.kube.apply_network_policy = refused  # type: ignore[method-assign]
    with pytest.raises(KubeError):
        await c.pass_(body)
    assert c.kube.created == []


async def test_a_requires_approval_tool_waits_then_runs_once_approved_and_the_decision_is_audited() -> None:
    c = PolicyCluster(catalog())
    spec = steps({"name": "pay", "kind": "tool", "tool": "pay", "agentRef": {"name": "researcher"},
                  "inputs": {"amount": 5}})
    body = workflow(spec)
    outcome = await c.pass_(body)
    assert c.kube.statuses[-1]["phase"] == "Waiting" and c.kube.created == []
    waiting = [e for e in c.kube.events if e["reason"] == "WaitingForApproval"]
    assert waiting and "agentflow approve wf pay" in waiting[0]["message"]
    assert outcome.wake_at == 1000.0 + 600
    c.now += 5
    approved = workflow(spec, annotations=decided_by(workflow(spec), names.APPROVE_ANNOTATION,
                                                     '{"node": "pay", "reason": "fine"}', "alice"))
    await c.pass_(approved)
    assert len(c.kube.created) == 1
    outcome = await c.run(workflow(spec))
    assert outcome.phase == "Succeeded"
    assert c.executions == [("pay", 1)]
    (decision,) = [e for e in c.audit.events if e.kind == "approval"]
    assert (decision.actor, decision.decision, decision.data["tool"], decision.data["reason"]) == (
        "user:alice", "approved", "pay", "fine")


async def test_a_rejected_tool_call_fails_the_step_with_the_reason() -> None:
    c = PolicyCluster(catalog())
    spec = steps({"name": "pay", "kind": "tool", "tool": "pay", "agentRef": {"name": "researcher"}})
    await c.pass_(workflow(spec))
    rejected = workflow(spec, annotations=decided_by(workflow(spec), names.REJECT_ANNOTATION,
                                                     '{"node": "pay", "reason": "no budget"}', "bob"))
    outcome = await c.pass_(rejected)
    assert outcome.phase == "Failed" and c.kube.created == []
    assert "rejected by bob: no budget" in c.kube.statuses[-1]["message"]


def budget(name: str, steps_max: int) -> Budget:
    return Budget.model_validate({"metadata": {"name": name},
                                  "spec": {"limits": {"usd": 100}, "maxConcurrentSteps": steps_max}})


async def test_the_namespace_quota_keeps_extra_steps_pending_with_the_reason() -> None:
    c = PolicyCluster(catalog(budget("team-large", 5), budget("team-small", 2)))
    spec = steps(*({"name": f"s{i}", "kind": "tool", "tool": "echo"} for i in range(4)))
    # A step pod of another workflow already runs in the namespace.
    c.kube.pods["other"] = {"metadata": {"name": "other", "labels": {
        names.COMPONENT_LABEL: names.COMPONENT_STEP, names.MANAGED_BY_LABEL: names.MANAGED_BY,
        names.RUN_LABEL: "other-run"}, "annotations": {}}, "status": {"phase": "Running"}}
    body = workflow(spec)
    outcome = await c.pass_(body)
    assert len(c.kube.created) == 1
    status = c.kube.statuses[-1]
    reason = "namespace quota: 2 of 2 steps running (Budget team-small)"
    assert status["message"] == reason
    assert [n["message"] for n in status["nodes"].values() if n["phase"] == "Pending"] == [reason] * 3
    assert outcome.wake_at is not None and outcome.wake_at <= c.now + 2.0
    c.kube.pods["other"]["status"] = {"phase": "Succeeded"}
    peak = 0
    for _ in range(30):
        c.kubelet()
        c.now += 1.0
        running = sum(1 for p in c.kube.pods.values() if p["status"]["phase"] in ("Pending", "Running"))
        outcome = await c.pass_(body)
        peak = max(peak, running, sum(1 for p in c.kube.pods.values() if p["status"]["phase"] == "Pending"))
        if outcome.finished:
            break
    assert outcome.phase == "Succeeded" and len(c.kube.created) == 4
    assert peak <= 2


async def test_a_gateway_is_in_the_pod_env_and_the_network_policy() -> None:
    c = PolicyCluster(catalog(), gateway="http://10.88.0.1:4000")
    await c.pass_(workflow(steps({"name": "look", "kind": "tool", "tool": "fetch",
                                  "agentRef": {"name": "researcher"}})))
    (pod_name,) = c.kube.created
    env = c.kube.pods[pod_name]["spec"]["containers"][0]["env"]
    assert {"name": "AGENTFLOW_GATEWAY_URL", "value": "http://10.88.0.1:4000"} in env
    egress = c.kube.netpols[pod_name]["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.88.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 4000}]} in egress


async def test_without_a_gateway_llm_pods_get_no_network_policy_and_a_declared_but_denied_tool_is_not_missing() -> None:
    c = PolicyCluster(catalog())
    body = workflow(steps({"name": "e", "kind": "tool", "tool": "echo"}))
    assert (await c.run(copy.deepcopy(body))).phase == "Succeeded"  # no agentRef: any declaring policy grants


async def test_an_agent_loop_turn_pod_may_reach_its_granted_mcp_server_to_list_its_tools() -> None:
    """A turn lists the tools of the loop's MCP servers: its pod's NetworkPolicy has each server's url (the
    server's grant decided whole, as the turn's executor decides it)."""
    from agentflow.models import PromptVersion

    docs = {"name": "docs", "mcp": {"url": "http://10.88.0.7:8000/mcp", "tools": ["search"]}}
    cat = catalog(policy("mcp-tools", [docs], {"team": "research"}),
                  agent("reader", {"team": "research"}, ["docs"]),
                  PromptVersion.model_validate({"metadata": {"name": "ask"}, "spec": {
                      "prompt": "ask", "version": "1", "messages": [{"role": "user", "content": "find it"}]}}))
    c = PolicyCluster(cat, gateway="http://10.88.0.1:4000")
    await c.pass_(workflow(steps({"name": "answer", "kind": "llm", "agentRef": {"name": "reader"},
                                  "promptRef": {"name": "ask"}})))
    (pod_name,) = c.kube.created
    assert c.kube.pods[pod_name]["metadata"]["annotations"][names.NODE_ANNOTATION] == "answer/t1"
    egress = c.kube.netpols[pod_name]["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.88.0.7/32"}}], "ports": [{"protocol": "TCP", "port": 8000}]} in egress
