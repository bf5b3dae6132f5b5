"""ToolPolicies on a real cluster (issue 6): the pod and NetworkPolicy a granted tool gets, a denied tool
that fails its step without creating anything, and a requiresApproval tool that waits for `agentflow approve`.

These tests check the objects the operator creates: a granted tool's pod gets a NetworkPolicy of its own, a
tool granted no egress only the namespace's baseline policy (agentflow-step-baseline, issue 17). The local
cluster enforces NetworkPolicies (kube-router, see tests/e2e/cluster/README.md; test_network_policy.py proves
it with packets), so a granted tool's pod runs under its policies here and reaches its endpoint through them.
The tool endpoint is a tiny HTTP server on this machine's pod-reachable address, so the grant is an IP and the
NetworkPolicy gets an ipBlock.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .admission import admission_operator
from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import REPO, CountingServer, Operator, wait_finished

pytestmark = pytest.mark.e2e

PREFIX = "tp-"


@pytest.fixture(scope="module")
def policy_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """An operator of this module's own, watching only its namespaces, with its webhooks (approvals are
    stamped by them)."""
    with admission_operator(cluster, postgres_dsn, tmp_path_factory.mktemp("policy-operator") / "operator.log",
                            f"{SESSION_PREFIX}{PREFIX}*") as op:
        yield op


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with fresh_namespace(cluster, PREFIX) as name:
        yield name


@pytest.fixture
def endpoint(cluster: Cluster) -> Iterator[CountingServer]:
    assert cluster.host_address
    server = CountingServer(cluster.host_address)
    yield server
    server.close()


def manifests(url: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "research-tools"},
         "spec": {"agentSelector": {"matchLabels": {"team": "research"}}, "runtimeClassName": "gvisor", "tools": [
             {"name": "lookup", "http": {"url": url, "method": "POST"}, "timeoutSeconds": 20,
              "permissions": {"env": {"LOOKUP_REGION": "eu-west-1"}},
              "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}},
             {"name": "pay", "builtin": {"name": "echo"}, "requiresApproval": True},
         ]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "ops-tools"},
         "spec": {"agentSelector": {"matchLabels": {"team": "ops"}},
                  "tools": [{"name": "restart", "builtin": {"name": "echo"}}]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "researcher", "labels": {"team": "research"}},
         "spec": {"role": "researcher", "model": {"name": "openai/gpt-4o-mini"},
                  "tools": ["lookup", "pay", "restart"]}},
    ]


def tool_workflow(name: str, tool: str) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"podCleanup": "never", "steps": [
                {"name": "call", "kind": "tool", "tool": tool, "agentRef": {"name": "researcher"},
                 "inputs": {"q": "papers"}}]}}


def run_pods(cluster: Cluster, ns: str, workflow: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", ns, "-l", f"agentflow.dev/workflow={workflow}")[
        "items"]
    return items


def logs(cluster: Cluster, ns: str, workflow: str) -> str:
    return "\n".join(cluster.kubectl("logs", "-n", ns, p["metadata"]["name"], check=False).stdout[-3000:]
                     for p in run_pods(cluster, ns, workflow))


def test_a_granted_http_tool_runs_in_a_sandboxed_pod_behind_its_network_policy(
        cluster: Cluster, policy_operator: Operator, ns: str, endpoint: CountingServer) -> None:
    cluster.apply([*manifests(endpoint.url), tool_workflow("granted", "lookup")], ns)
    wf = wait_finished(cluster, ns, "granted", timeout=240)
    assert wf["status"]["phase"] == "Succeeded", (wf["status"], logs(cluster, ns, "granted"))
    assert len(endpoint.calls) == 1  # the pod really reached the granted endpoint

    (pod,) = run_pods(cluster, ns, "granted")
    spec = pod["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOOKUP_REGION"] == "eu-west-1"
    assert container["resources"]["requests"]["cpu"] == "50m"
    assert container["resources"]["limits"]["memory"] == "256Mi"

    name = pod["metadata"]["name"]
    policy = cluster.get_json("networkpolicy", name, "-n", ns)
    assert policy["spec"]["podSelector"] == {"matchLabels": {"agentflow.dev/pod": name}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not policy["spec"].get("ingress")  # nothing may connect to the step
    host = cluster.host_address
    port = int(endpoint.url.split(":")[2].split("/")[0])
    callback_port = policy_operator.port
    egress = policy["spec"]["egress"]
    blocks = {(peer["ipBlock"]["cidr"], p["port"]) for rule in egress for peer in rule.get("to", [])
              if "ipBlock" in peer for p in rule.get("ports", [])}
    assert blocks == {(f"{host}/32", port), (f"{host}/32", callback_port)}  # the grant and the callback only
    dns = [rule for rule in egress if any("podSelector" in peer for peer in rule.get("to", []))]
    assert dns == []  # every destination is an address: no name to resolve, so no DNS either
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "Workflow"
    assert pod["metadata"]["annotations"]["agentflow.dev/network-policy"] == name  # deleted with the pod
    # and the namespace's baseline selects it too (policies add up: the callback, which its own allows anyway)
    baseline = cluster.get_json("networkpolicy", "agentflow-step-baseline", "-n", ns)
    assert baseline["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_a_tool_the_agent_is_not_granted_fails_the_step_and_creates_nothing(
        cluster: Cluster, policy_operator: Operator, ns: str, endpoint: CountingServer) -> None:
    cluster.apply([*manifests(endpoint.url), tool_workflow("denied", "restart")], ns)
    wf = wait_finished(cluster, ns, "denied", timeout=120)
    status = wf["status"]
    assert status["phase"] == "Failed", status
    message = status["nodes"]["call"]["message"]
    assert message.startswith("ToolNotAllowed:"), message
    for word in ("'researcher'", "'restart'", "ops-tools", "research-tools"):
        assert word in message, message
    assert run_pods(cluster, ns, "denied") == []
    assert cluster.get_json("networkpolicies", "-n", ns)["items"] == []
    events = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=denied")["items"]
    assert any("ToolNotAllowed" in e["message"] and "ops-tools" in e["message"] for e in events), events


def test_a_requires_approval_tool_waits_and_runs_after_agentflow_approve(
        cluster: Cluster, policy_operator: Operator, ns: str, endpoint: CountingServer) -> None:
    cluster.apply([*manifests(endpoint.url), tool_workflow("gated", "pay")], ns)

    def waiting() -> bool:
        status = cluster.get_json("workflows.agentflow.dev", "gated", "-n", ns).get("status") or {}
        return status.get("phase") == "Waiting"

    cluster.wait_until("the tool step to wait for approval", waiting, timeout=120)
    assert run_pods(cluster, ns, "gated") == []  # nothing runs before the decision
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "approve", "gated", "call", "--namespace", ns,
                           "--kubeconfig", cluster.kubeconfig, "--reason", "ok"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    wf = wait_finished(cluster, ns, "gated", timeout=240)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    (pod,) = run_pods(cluster, ns, "gated")
    # a builtin tool is granted no egress: no NetworkPolicy of its own, the namespace's baseline selects it and
    # lets it reach the operator's callback only (issue 17: no policy created and deleted per step)
    policies = {p["metadata"]["name"]: p for p in cluster.get_json("networkpolicies", "-n", ns)["items"]}
    assert set(policies) == {"agentflow-step-baseline"}, sorted(policies)
    baseline = policies["agentflow-step-baseline"]
    assert "ownerReferences" not in baseline["metadata"]
    selector = baseline["spec"]["podSelector"]["matchLabels"]
    assert selector["agentflow.dev/isolated"] == "true" and selector.items() <= pod["metadata"]["labels"].items()
    assert baseline["spec"]["policyTypes"] == ["Ingress", "Egress"] and not baseline["spec"].get("ingress")
    blocks = {(peer["ipBlock"]["cidr"], p["port"]) for rule in baseline["spec"]["egress"]
              for peer in rule.get("to", []) if "ipBlock" in peer for p in rule.get("ports", [])}
    assert blocks == {(f"{cluster.host_address}/32", policy_operator.port)}
