"""MCP tool servers on a real cluster: a tool step in a gVisor step pod calls a tool of an MCP server (written with
the official SDK's server side, tests/services/mcp_server.py) that this test starts on the pod-reachable host address,
through a ToolPolicy's granted ``mcp`` tool; the pod's NetworkPolicy allows that server's address and port and
nothing else; a tool of the same server that the policy does not grant fails its step before any pod exists, and the
server never sees it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from services.mcp_server import McpServer, running_mcp_server

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import Operator, wait_finished

pytestmark = pytest.mark.e2e

PREFIX = "mcp-"


@pytest.fixture(scope="module")
def mcp_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """An operator of this module's own, watching only its namespaces."""
    if not cluster.host_address:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    op = Operator(cluster, postgres_dsn, cluster.host_address,
                  tmp_path_factory.mktemp("mcp-operator") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*"])
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def mcp_server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServer]:
    assert cluster.host_address
    with running_mcp_server(cluster.host_address, tmp_path_factory.mktemp("mcp-server") / "calls.jsonl") as server:
        yield server


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with fresh_namespace(cluster, PREFIX) as name:
        yield name


def manifests(url: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "research-tools"},
         "spec": {"agentSelector": {"matchLabels": {"team": "research"}}, "runtimeClassName": "gvisor", "tools": [
             {"name": "docs", "description": "the team's document server", "timeoutSeconds": 60,
              "mcp": {"url": url, "tools": ["search", "fetch"], "connectTimeoutSeconds": 30}}]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "researcher", "labels": {"team": "research"}},
         "spec": {"role": "researcher", "model": {"name": "openai/gpt-4o-mini"}, "tools": ["docs"]}},
    ]


TRANSIENT = ["ToolTimeout", "McpUnavailable"]
"""What a network tool's step is retried on, as production Workflows calling a remote server are: once, in a new pod
(seen once in CI on a loaded node: the first attempt's call timed out; the test says so when a retry was needed)."""


def workflow(name: str, tool: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"podCleanup": "never", "outputs": {"found": "steps.call.output"}, "steps": [
                {"name": "call", "kind": "tool", "tool": tool, "agentRef": {"name": "researcher"}, "inputs": inputs,
                 "retry": {"limit": 1, "retryOn": TRANSIENT, "backoff": {"initialSeconds": 1}}}]}}


def run_pods(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get_json("pods", "-n", ns, "-l", f"agentflow.dev/workflow={name}")["items"]
    return pods


def logs(cluster: Cluster, ns: str, name: str) -> str:
    return "\n".join(cluster.kubectl("logs", "-n", ns, p["metadata"]["name"], check=False).stdout[-3000:]
                     for p in run_pods(cluster, ns, name))


def test_a_granted_mcp_tool_is_called_from_a_gvisor_step_pod(
        cluster: Cluster, mcp_operator: Operator, mcp_server: McpServer, ns: str) -> None:
    cluster.apply([*manifests(mcp_server.url), workflow("granted", "docs/search", {"query": "papers", "limit": 2})],
                  ns)
    wf = wait_finished(cluster, ns, "granted", timeout=420)
    node = wf["status"]["nodes"]["call"]
    assert wf["status"]["phase"] == "Succeeded", (  # the step's message first: CI output is cut
        node.get("message"), logs(cluster, ns, "granted"), mcp_operator.log, wf["status"])
    assert wf["status"]["outputs"] == {"found": {"result": ["papers result 1", "papers result 2"]}}

    pods = run_pods(cluster, ns, "granted")
    attempts = node["attempts"]
    assert len(pods) == attempts and attempts in (1, 2), (attempts, [p["metadata"]["name"] for p in pods])
    if attempts > 1:
        warnings.warn(f"the MCP call needed a retry: {logs(cluster, ns, 'granted')[-2500:]}", stacklevel=1)
    pod = pods[-1]
    assert all(p["spec"]["runtimeClassName"] == "gvisor" for p in pods)
    calls = [c for c in mcp_server.calls() if c["tool"] == "search"]
    assert [c["arguments"] for c in calls][-1:] == [{"query": "papers", "limit": 2}]  # with the step's inputs
    assert len(calls) <= attempts  # at most once per attempt (a timed-out attempt may or may not have reached it)
    assert calls[-1]["idempotencyKey"].endswith(f"/call/{attempts}")  # the attempt's key, in Idempotency-Key

    policy = cluster.get_json("networkpolicy", pod["metadata"]["name"], "-n", ns)
    host, port = mcp_server.url.split("//")[1].split("/")[0].split(":")
    blocks = {(peer["ipBlock"]["cidr"], p["port"]) for rule in policy["spec"]["egress"]
              for peer in rule.get("to", []) if "ipBlock" in peer for p in rule.get("ports", [])}
    assert blocks == {(f"{host}/32", int(port)), (f"{host}/32", mcp_operator.port)}  # the server and the callback


def test_a_tool_of_the_server_that_is_not_granted_is_refused(
        cluster: Cluster, mcp_operator: Operator, mcp_server: McpServer, ns: str) -> None:
    cluster.apply([*manifests(mcp_server.url), workflow("refused", "docs/delete_everything", {})], ns)
    wf = wait_finished(cluster, ns, "refused", timeout=120)
    status = wf["status"]
    assert status["phase"] == "Failed", status
    message = status["nodes"]["call"]["message"]
    assert message.startswith("ToolNotAllowed:"), message
    port_path = mcp_server.url.rsplit(":", 1)[1]  # "PORT/mcp": status masks IP addresses (k8s.previews)
    for word in ("'delete_everything'", "'docs'", f"(http://<IP>:{port_path})", "'researcher'", "'research-tools'"):
        assert word in message, message
    assert run_pods(cluster, ns, "refused") == []  # nothing was created for it
    assert cluster.get_json("networkpolicies", "-n", ns)["items"] == []
    assert not [c for c in mcp_server.calls() if c["tool"] == "delete_everything"]

