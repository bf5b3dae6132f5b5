"""The operator on a real cluster: Workflows become gVisor step pods, status comes back, and
killing the operator at random moments never runs a step twice.

The operator runs as a process on this machine against the cluster's kubeconfig (its development
mode); step pods reach its callback server at an address of this machine (the local cluster's
bridge gateway, or AGENTFLOW_E2E_HOST_ADDRESS for another cluster). PostgreSQL is a real server
started by tests/services/postgres.py.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import OPERATOR_PREFIX, SESSION_PREFIX, Cluster, fresh_namespace  # noqa: F401

# The session's host-process operator watches only namespaces with this prefix (other tests start
# operators of their own, which must not share runs with it).

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUNTIME_IMAGE = os.environ.get("AGENTFLOW_E2E_RUNTIME_IMAGE", "localhost/agentflow-runtime:dev")
SIGNING_KEY = b"e2e-approval-signing-key-" + b"x" * 32
# What no tool may reach on the local cluster (lib.sh: SERVICE_CIDR, the API server on the bridge address); a
# cluster given by KUBECONFIG names its own ranges in AGENTFLOW_E2E_EGRESS_DENY (comma-separated).
LOCAL_EGRESS_DENY = ("10.96.0.0/16", "10.88.0.1:6443")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def egress_deny(cluster: Cluster) -> list[str]:
    """--egress-deny flags for the cluster's own ranges and API server."""
    given = os.environ.get("AGENTFLOW_E2E_EGRESS_DENY")
    entries = given.split(",") if given is not None else list(LOCAL_EGRESS_DENY) if cluster.local else []
    return [flag for entry in entries if entry.strip() for flag in ("--egress-deny", entry.strip())]


class Operator:
    """`agentflow operator` as a child process that the tests may kill and start again."""

    def __init__(self, cluster: Cluster, dsn: str, host: str, log: Path, extra_args: Sequence[str] = ()) -> None:
        self.cluster = cluster
        self.extra_args = list(extra_args)  # more flags of `agentflow operator` (--namespace, --webhook-...)
        self.dsn = dsn
        self.host = host
        self.port = free_port(host)
        self.metrics_port = free_port("127.0.0.1")
        self.log = log
        self.signing_key_file = log.parent / "signing.key"
        self.signing_key_file.write_bytes(SIGNING_KEY)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        args = [sys.executable, "-m", "agentflow.cli", "operator", "--kubeconfig", self.cluster.kubeconfig,
                "--postgres-dsn", self.dsn, "--callback-listen", f"{self.host}:{self.port}",
                "--callback-url", f"http://{self.host}:{self.port}", "--step-image", RUNTIME_IMAGE,
                "--signing-key-file", str(self.signing_key_file), "--metrics-port", str(self.metrics_port),
                "--step-env", "AGENTFLOW_MODEL_MODE=offline", *egress_deny(self.cluster), *self.extra_args]
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited ({self.proc.returncode}); see {self.log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the operator did not start listening; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def load_manifests(path: Path, **spec_overrides: Any) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for d in docs:
        if d["kind"] == "Workflow":
            d["spec"].update(spec_overrides)
    return docs


def wait_finished(cluster: Cluster, namespace: str, name: str, timeout: float = 300) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def finished() -> bool:
        wf = cluster.get_json("workflows.agentflow.dev", name, "-n", namespace)
        result.update(wf)
        return (wf.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled")

    cluster.wait_until(f"workflow {namespace}/{name} to finish", finished, timeout=timeout, every=1)
    return result


def local_outputs(path: Path, tmp: Path) -> Any:
    env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(tmp), "run", str(path), "--json"],
                         capture_output=True, text=True, env=env, check=True, timeout=300)
    return json.loads(out.stdout)["outputs"]


def test_quickstart_runs_in_gvisor_pods_with_the_local_runners_outputs(
        cluster: Cluster, operator: Operator, op_namespace: str, tmp_path: Path) -> None:
    namespace = op_namespace
    example = REPO / "examples/manifests/quickstart.yaml"
    docs = load_manifests(example, podCleanup="never")
    cluster.apply(docs, namespace)
    name = next(d["metadata"]["name"] for d in docs if d["kind"] == "Workflow")
    wf = wait_finished(cluster, namespace, name)
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    assert status["outputs"] == local_outputs(example, tmp_path)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Succeeded"] == "True"
    assert status["observedGeneration"] == wf["metadata"]["generation"]

    def step_pods() -> list[dict[str, Any]]:
        return list(cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"])

    # A step is done when its result is stored; its pod exits a moment later.
    cluster.wait_until("step pods to exit", lambda: all(p["status"]["phase"] == "Succeeded" for p in step_pods()),
                       timeout=60)
    pods = step_pods()
    # one pod per step attempt; an llm step whose Agent lists tools is an agent loop, whose turns
    # (classify/t1, ...) are the nodes with pods
    nodes = status["nodes"]
    loops = {n for n in nodes if any(m.startswith(n + "/") for m in nodes)}
    assert loops, "the quickstart's Agent lists tools: its llm steps run agent loops"
    assert len(pods) == len(nodes) - len(loops) >= 3
    assert {p["metadata"]["annotations"]["agentflow.dev/node"] for p in pods} == set(nodes) - loops
    for pod in pods:
        spec = pod["spec"]
        assert spec["runtimeClassName"] == "gvisor"
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        container = spec["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["limits"] and container["resources"]["requests"]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "Workflow"
        assert not any(v.get("secret") for v in spec.get("volumes", []))
        # the one projected volume is the attempt's own token, for the audience agentflow only
        [token] = [v for v in spec["volumes"] if v.get("projected")]
        [source] = token["projected"]["sources"]
        assert list(source) == ["serviceAccountToken"] and source["serviceAccountToken"]["audience"] == "agentflow"
        assert pod["status"]["phase"] == "Succeeded"

    # The other kinds are reconciled to a Ready condition with observedGeneration.
    for doc in docs:
        if doc["kind"] == "Workflow":
            continue
        plural = {"Agent": "agents", "PromptVersion": "promptversions", "ToolPolicy": "toolpolicies",
                  "Budget": "budgets"}[doc["kind"]]
        ref = f"{plural}.agentflow.dev/{doc['metadata']['name']}"

        def ready(ref: str = ref) -> bool:
            obj = cluster.get_json(ref, "-n", namespace)
            conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
            ok = conds.get("Ready", {}).get("status") == "True"
            return ok and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]

        cluster.wait_until(f"{ref} to be Ready", ready, timeout=60)
    # ... and an Agent asking for a tool no ToolPolicy declares is not Ready, and says why.
    cluster.apply({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "lost"},
                   "spec": {"role": "r", "model": {"name": "openai/gpt-4o-mini"}, "tools": ["nowhere"]}}, namespace)

    def not_ready() -> bool:
        obj = cluster.get_json("agents.agentflow.dev/lost", "-n", namespace)
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        return conds.get("Ready", {}).get("status") == "False" and "nowhere" in conds["Ready"]["message"]

    cluster.wait_until("agent 'lost' to report the missing tool", not_ready, timeout=60)

    table = cluster.kubectl("get", "workflows.agentflow.dev", "-n", namespace).stdout
    assert "Succeeded" in table and "PROGRESS" in table.upper()
    described = cluster.kubectl("describe", "workflows.agentflow.dev", name, "-n", namespace).stdout
    # progress Events are coalesced (k8s.events.coalesce): each step's success is told, in one Event or a few
    assert "attempt 1 succeeded" in described and "Succeeded" in described

    # A deleted Workflow takes its pods with it (owner references, garbage collection).
    cluster.kubectl("delete", "workflows.agentflow.dev", name, "-n", namespace, "--wait=true")
    cluster.wait_until("step pods to be collected", lambda: not cluster.get_json(
        "pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"], timeout=120)


class CountingServer:
    """An HTTP tool endpoint that records every call with its idempotency key."""

    def __init__(self, host: str) -> None:
        self.calls: list[str] = []
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    outer.calls.append(self.headers.get("Idempotency-Key", ""))
                payload = json.dumps({"echo": body, "n": len(outer.calls)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/count"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def counting_workflow(url: str, items: int) -> list[dict[str, Any]]:
    tool = {"name": "count", "http": {"url": url, "method": "POST"}, "timeoutSeconds": 20}
    steps = [
        {"name": "first", "kind": "tool", "tool": "count", "inputs": {"step": "first"}},
        {"name": "fan", "kind": "tool", "tool": "count", "dependsOn": ["first"], "forEach": "inputs.items",
         "parallelism": 2, "inputs": {"item": "${{ item }}"}},
        {"name": "last", "kind": "tool", "tool": "count", "dependsOn": ["fan"], "inputs": {"step": "last"}},
    ]
    return [
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "counting"},
         "spec": {"tools": [tool]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "exactly-once"},
         "spec": {"inputs": {"items": list(range(items))}, "steps": steps,
                  "retry": {"limit": 3, "backoff": {"initialSeconds": 1}}}},
    ]


def test_killing_the_operator_never_runs_a_step_twice(cluster: Cluster, operator: Operator,
                                                     op_namespace: str) -> None:
    namespace = op_namespace
    assert cluster.host_address
    server = CountingServer(cluster.host_address)
    try:
        items = 12
        cluster.apply(counting_workflow(server.url, items), namespace)
        rng = random.Random(20261121)
        kills = 0
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 4.0))
            wf = cluster.get_json("workflows.agentflow.dev", "exactly-once", "-n", namespace)
            if (wf.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                break
            operator.kill()  # SIGKILL, at a random moment of the run
            kills += 1
            time.sleep(rng.uniform(0.0, 2.0))
            operator.start()
        wf = wait_finished(cluster, namespace, "exactly-once", timeout=300)
        assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)
        assert kills >= 5
        expected = {"first", "last", *(f"fan[{i}]" for i in range(items))}
        nodes = [key.rsplit("/", 2)[1] for key in server.calls]
        assert sorted(nodes) == sorted(expected), f"calls: {server.calls}"
    finally:
        server.close()


def test_a_refused_pod_stalls_the_workflow_visibly_and_the_run_goes_on_once_allowed(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    """What the operator cannot get past is on the Workflow, not only in its log, and clears when it recovers.

    A ResourceQuota of zero pods makes the API server refuse the step pod (403): the Workflow gets a phase, the
    message, Stalled=True with the reason and one Warning Event; once the quota is gone the run goes on, Stalled
    turns False and a Recovered Event says so."""
    namespace = op_namespace
    cluster.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
                   "spec": {"hard": {"pods": "0"}}}, namespace)
    cluster.apply([
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "tools"},
         "spec": {"tools": [{"name": "echo", "builtin": {"name": "echo"}}]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "quota-blocked"},
         "spec": {"steps": [{"name": "only", "kind": "tool", "tool": "echo", "inputs": {"x": 1}}]}},
    ], namespace)
    seen: dict[str, Any] = {}

    def conditions(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in (wf.get("status") or {}).get("conditions") or []}

    def stalled() -> bool:
        seen.update(cluster.get_json("workflows.agentflow.dev", "quota-blocked", "-n", namespace))
        return conditions(seen).get("Stalled", {}).get("status") == "True"

    def events() -> list[dict[str, Any]]:
        return list(cluster.get_json("events", "-n", namespace, "--field-selector",
                                     "involvedObject.name=quota-blocked")["items"])

    cluster.wait_until("the Workflow to say it is stalled", stalled, timeout=180)
    stall = conditions(seen)["Stalled"]
    assert stall["reason"] == "Forbidden" and "quota" in stall["message"].lower(), stall
    assert seen["status"]["phase"] and seen["status"]["message"] == stall["message"]
    assert [e["type"] for e in events() if e["reason"] == "Forbidden"] == ["Warning"]
    cluster.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    wf = wait_finished(cluster, namespace, "quota-blocked", timeout=300)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert conditions(wf)["Stalled"]["status"] == "False"
    reasons = [e["reason"] for e in events()]
    assert "Recovered" in reasons and reasons.count("Forbidden") == 1


def counting_agent(url: str, calls: int) -> list[dict[str, Any]]:
    """An llm step whose Agent's loop asks for ``calls`` calls of the counting tool in one turn (in parallel),
    then answers: the offline model calls what its instructions' [[call]] directives name."""
    directives = " ".join(f'[[call count {{"call": {i}}}]]' for i in range(calls))
    return [
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "counting-agent"},
         "spec": {"agentSelector": {"matchLabels": {"app": "counting"}}, "tools": [
             {"name": "count", "description": "Counts a call.", "http": {"url": url, "method": "POST"},
              "timeoutSeconds": 20}]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "counter", "labels": {"app": "counting"}},
         "spec": {"role": "counter", "instructions": f"Count every call: {directives}. Then say done.",
                  "model": {"name": "openai/gpt-4o-mini"}, "tools": ["count"],
                  "loop": {"maxTurns": 4, "maxToolCalls": calls, "parallelToolCalls": True}}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptVersion", "metadata": {"name": "count-v1"},
         "spec": {"prompt": "count", "version": "1", "messages": [{"role": "user", "content": "Go."}]}},
        {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "loop-exactly-once"},
         "spec": {"steps": [{"name": "answer", "kind": "llm", "agentRef": {"name": "counter"},
                             "promptRef": {"name": "count-v1"}, "timeoutSeconds": 600}],
                  "retry": {"limit": 3, "backoff": {"initialSeconds": 1}}}},
    ]


def test_killing_the_operator_during_an_agent_loop_calls_each_tool_once(cluster: Cluster, operator: Operator,
                                                                        op_namespace: str) -> None:
    namespace = op_namespace
    assert cluster.host_address
    server = CountingServer(cluster.host_address)
    try:
        calls = 6
        cluster.apply(counting_agent(server.url, calls), namespace)
        rng = random.Random(20261206)
        kills = 0
        for _ in range(8):
            time.sleep(rng.uniform(0.5, 3.0))
            wf = cluster.get_json("workflows.agentflow.dev", "loop-exactly-once", "-n", namespace)
            if (wf.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                break
            operator.kill()  # SIGKILL, at a random moment of the loop
            kills += 1
            time.sleep(rng.uniform(0.0, 1.5))
            operator.start()
        wf = wait_finished(cluster, namespace, "loop-exactly-once", timeout=420)
        assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)
        assert kills >= 5, f"the run ended after {kills} kills"
        # Each call of the model's turn reached the server once: one request per call node, whatever the kills.
        nodes = [key.split("/", 1)[1].rsplit("/", 1)[0] for key in server.calls]
        assert sorted(nodes) == sorted(f"answer/t1/call-{i}" for i in range(1, calls + 1)), server.calls
        # status shows the loop: its step, the turn that asked for the calls, each call, and the answering turn
        status_nodes = wf["status"]["nodes"]
        shown = {n: status_nodes[n]["phase"] for n in status_nodes}
        expected = {"answer", "answer/t1", "answer/t2", *(f"answer/t1/call-{i}" for i in range(1, calls + 1))}
        assert expected <= set(shown) and {shown[n] for n in expected} == {"Succeeded"}, shown
    finally:
        server.close()


def test_the_content_moderation_behavior_tree_runs_on_the_cluster_like_locally(
        cluster: Cluster, operator: Operator, op_namespace: str, tmp_path: Path) -> None:
    """A behavior tree (issue 16): the selector's branch the post calls for, the local runner's outputs, one pod
    per leaf attempt (an agent loop's turns for classify)."""
    namespace = op_namespace
    example = REPO / "examples/manifests/content-moderation.yaml"
    scam = "Crypto giveaway! Send 1 BTC, get 2 back. Not a scam."
    for name, inputs in (("moderate-clean", {}), ("moderate-scam", {"text": scam})):
        docs = load_manifests(example, podCleanup="never")
        workflow = next(d for d in docs if d["kind"] == "Workflow")
        workflow["metadata"]["name"] = name
        workflow["spec"]["inputs"].update(inputs)
        cluster.apply(docs, namespace)
        wf = wait_finished(cluster, namespace, name)
        status = wf["status"]
        assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
        env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}
        args = [arg for key, value in inputs.items() for arg in ("--input", f"{key}={value}")]
        local = subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(tmp_path / name), "run",
                                str(example), *args, "--json"], capture_output=True, text=True, env=env, check=True,
                               timeout=300)
        assert status["outputs"] == json.loads(local.stdout)["outputs"]
        nodes = status["nodes"]
        leaves = {n for n in nodes if "/" not in n}
        assert {"classify#1", "guidelines#1", "record#1"} <= leaves
        assert ("takedown#1" in leaves) == (name == "moderate-scam")
        assert ("publish#1" in leaves) == (name == "moderate-clean")
        pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
        mine = {p["metadata"]["annotations"]["agentflow.dev/node"] for p in pods
                if p["metadata"]["ownerReferences"][0]["name"] == name}
        loops = {n for n in nodes if any(m.startswith(n + "/") for m in nodes)}
        assert mine == set(nodes) - loops, (mine, nodes)


def test_the_support_agent_example_asks_the_mcp_order_server_in_its_step_pod(
        cluster: Cluster, operator: Operator, op_namespace: str, postgres_dsn: str) -> None:
    """support-agent.yaml on the cluster (issue 12): the agent loop's order lookup starts the demo MCP server over
    stdio inside the call's step pod (the runtime image's Python) and its answer is journaled; the delegate's
    loop and the recording step run too. Without a memory store the memory calls answer that to the model."""
    import asyncio

    from agentflow.examples.order_server import ORDERS
    from agentflow.storage import PostgresStore

    namespace = op_namespace
    cluster.apply(load_manifests(REPO / "examples/manifests/support-agent.yaml", podCleanup="never"), namespace)
    wf = wait_finished(cluster, namespace, "support-agent", timeout=600)
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    assert status["outputs"]["action"] == "issue-refund"

    async def journal() -> list[Any]:
        store = await PostgresStore.connect(postgres_dsn)
        try:
            return [r.event for r in await store.load_journal(wf["metadata"]["uid"])]
        finally:
            await store.close()

    events = asyncio.run(journal())
    (scheduled,) = [e for e in events
                    if e.type.value == "StepScheduled" and e.data.get("tool") == "orders__order_status"]
    assert scheduled.node.startswith("answer/t1/call-") and scheduled.data["inputs"] == {"order": "4411"}
    (done,) = [e for e in events if e.type.value == "StepSucceeded" and e.node == scheduled.node]
    assert done.data["output"] == ORDERS["4411"]
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
    assert scheduled.node in {p["metadata"]["annotations"]["agentflow.dev/node"] for p in pods}


def test_the_incident_planner_runs_its_plan_on_the_cluster_like_locally(
        cluster: Cluster, operator: Operator, op_namespace: str, tmp_path: Path) -> None:
    """A plan step (issue 16) on the operator: the planning attempt and each planned step are pods, the plan's
    nodes and the Workflow's outputs are the local runner's."""
    namespace = op_namespace
    example = REPO / "examples/manifests/incident-planner.yaml"
    cluster.apply(load_manifests(example, podCleanup="never"), namespace)
    wf = wait_finished(cluster, namespace, "incident-planner", timeout=600)
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}
    local = subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(tmp_path), "run", str(example),
                            "--json"], capture_output=True, text=True, env=env, check=True, timeout=300)
    assert status["outputs"] == json.loads(local.stdout)["outputs"]
    nodes = status["nodes"]
    planned = {n for n in nodes if n.startswith("respond/p1/")}
    assert planned and {nodes[n]["phase"] for n in planned} == {"Succeeded"}, nodes
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
    mine = {p["metadata"]["annotations"]["agentflow.dev/node"] for p in pods}
    assert planned <= mine and "respond/plan1" in mine and "report" in mine, (mine, sorted(nodes))
