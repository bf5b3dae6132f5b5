"""Canary rollouts gated on evidence, on a real cluster: a PromptRollout moves a prompt family's runs from its
stable PromptVersion to a candidate step by step, on what the runs' journals in PostgreSQL say.

The model is a recording OpenAI-compatible fake provider on this machine (``RecordingProvider``): step pods call
it through the operator's gateway (``--gateway-listen``, the Agent's ``apiBase`` and key Secret), and it keeps
every request it receives. It answers the triage schema's JSON, except for a prompt carrying ``WORSE``: then
text that is not JSON, on the request and on every repair, so that every run of that version fails the schema.
(With four tickets in five failing, minSamples 3 let an unlucky split promote it at p = 0.106 > alpha 0.1: the
gate is built to bound false rollbacks, and a candidate only somewhat worse needs more samples than this test
can afford to be caught every time; bench/canary_bench.py measures that rate.)

    good candidate        evaluationGate.required false (no suite); schemaFailureRate equal -> Promoted, 100 %
    worse candidate       schemaFailureRate 100 % vs 0 % -> RolledBack automatically, weight 0
    failed evaluation     a suite whose assertion cannot hold, run by the operator as step pods through the
                          gateway: status.evaluation Failed -> the rollout Failed, and no run gets the candidate

Small numbers keep the wall time low: one step at 50 %, minRuns 3, minSamples 3, confidence 0.9. Each decision
is also an Event, and ``agentflow prompt status FAMILY -n NS`` explains it with the numbers. Not run in the unit
tier (pytest -m e2e, a cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import REPO, Operator, free_port

pytestmark = pytest.mark.e2e

API = "agentflow.dev/v1alpha1"
PREFIX = "pro-"  # this module's namespaces; its operator watches only these
WORSE = "Answer in a friendly sentence."
BAD_ANSWER = "I think it is billing, probably."


class RecordingProvider:
    """An OpenAI-compatible chat completions server (POST /v1/chat/completions) that records each request."""

    def __init__(self, host: str) -> None:
        self.requests: list[dict[str, Any]] = []
        lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with lock:
                    provider.requests.append(body)
                content = provider.answer(body.get("messages") or [])
                data = json.dumps({
                    "id": f"chatcmpl-{len(provider.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", "gpt-4o-mini"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @staticmethod
    def answer(messages: list[dict[str, Any]]) -> str:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        if WORSE in text:
            return BAD_ANSWER
        return json.dumps({"category": "billing"})

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def provider(cluster: Cluster) -> Iterator[RecordingProvider]:
    if not cluster.host_address:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    server = RecordingProvider(cluster.host_address)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rollout_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                     provider: RecordingProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    assert host
    gateway_port = free_port(host)
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("rollouts") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*", "--step-env", "AGENTFLOW_MODEL_MODE=live",
                   "--gateway-listen", f"{host}:{gateway_port}", "--gateway-url", f"http://{host}:{gateway_port}",
                   "--model-endpoint", provider.base_url])
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: Cluster, rollout_operator: Operator) -> Iterator[str]:
    with fresh_namespace(cluster, PREFIX) as name:
        yield name
OUTPUT_SCHEMA = {"type": "object", "required": ["category"],
                 "properties": {"category": {"type": "string", "enum": ["billing", "technical", "other"]}}}


def version(name: str, label: str, *, worse: bool = False, suite: bool = False) -> dict[str, Any]:
    messages = [{"role": "system", "content": f"Classify the ticket ({label}). Answer JSON."},
                {"role": "user", "content": "Ticket: ${{ inputs.ticket }}"}]
    if worse:  # the provider then answers text for most tickets, to the request and to every repair request
        messages[0]["content"] += " " + WORSE
    spec: dict[str, Any] = {"prompt": "triage", "version": label, "messages": messages,
                            "inputSchema": {"type": "object", "required": ["ticket"],
                                            "properties": {"ticket": {"type": "string"}}},
                            "outputSchema": OUTPUT_SCHEMA}
    if suite:
        spec["evaluations"] = {"agentRef": {"name": "triage-agent"}, "cases": [
            {"name": "impossible", "inputs": {"ticket": "charged twice"},
             "assertions": [{"contains": "a-category-no-answer-has"}]}]}
    return {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": name}, "spec": spec}


def rollout(candidate: str, *, required: bool = False) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "PromptRollout", "metadata": {"name": "triage"},
            "spec": {"prompt": "triage", "stable": "triage-v1", "candidate": candidate,
                     "steps": [{"weight": 50, "minRuns": 3}],
                     "evaluationGate": {"required": required},
                     "onlineGates": [{"signal": "schemaFailureRate", "maxDegradation": 0.1}],
                     "minSamples": 3, "confidence": 0.9, "onFailure": "Rollback"}}


def base(provider: RecordingProvider) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "provider-key", "labels": {"agentflow.dev/credential": "true"}},
         "stringData": {"api-key": "sk-e2e-rollouts"}},
        {"apiVersion": API, "kind": "Agent", "metadata": {"name": "triage-agent"},
         "spec": {"role": "support triage", "instructions": "Classify tickets.",
                  "model": {"name": "openai/gpt-4o-mini", "temperature": 0, "maxTokens": 200,
                            "apiBase": provider.base_url,
                            "credentialsSecretRef": {"name": "provider-key", "key": "api-key"}},
                  "pii": {"redact": False}}},
        version("triage-v1", "1"),
    ]


def workflow(name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name},
            "spec": {"inputs": {"ticket": f"{name}: I was charged twice, please refund"},
                     "steps": [{"name": "triage", "kind": "llm", "agentRef": {"name": "triage-agent"},
                                "promptRef": {"family": "triage"}, "inputs": {"ticket": "${{ inputs.ticket }}"},
                                "retry": {"limit": 0}}]}}


def rollout_status(cluster: Cluster, ns: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.get_json("promptrollouts.agentflow.dev", "triage", "-n", ns).get("status") or {}
    return status


def wait_phase(cluster: Cluster, ns: str, phases: set[str], timeout: float = 90) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.clear()
        seen.update(rollout_status(cluster, ns))
        return seen.get("phase") in phases

    cluster.wait_until(f"the rollout to be {'/'.join(sorted(phases))}", reached, timeout=timeout, every=2)
    return seen


def finished(cluster: Cluster, ns: str, names: list[str]) -> bool:
    items = cluster.get_json("workflows.agentflow.dev", "-n", ns)["items"]
    phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
    return all(phases.get(n) in ("Succeeded", "Failed") for n in names)


def drive(cluster: Cluster, ns: str, until: set[str], batches: int = 6, per_batch: int = 4) -> dict[str, Any]:
    """Start runs of the family, a batch at a time, until the rollout is in one of ``until``."""
    for b in range(batches):
        names = [f"run-{b}-{i}" for i in range(per_batch)]
        cluster.apply([workflow(n) for n in names], ns)
        cluster.wait_until(f"batch {b} to finish", lambda names=names: finished(cluster, ns, names), timeout=300,
                           every=2)
        deadline = time.monotonic() + 30  # a look every 10 s (ROLLOUT_INTERVAL_SECONDS)
        while time.monotonic() < deadline:
            status = rollout_status(cluster, ns)
            if status.get("phase") in until:
                return status
            time.sleep(2)
    raise AssertionError(f"the rollout did not reach {until} after {batches} batches: {rollout_status(cluster, ns)}")


def chosen(cluster: Cluster, ns: str) -> dict[str, str]:
    """Each run's PromptVersion of the family (status.prompts: what RunStarted recorded); the operator's
    evaluation runs (label agentflow.dev/evaluation: a version pinned by name, no family choice) left out."""
    out = {}
    for item in cluster.get_json("workflows.agentflow.dev", "-n", ns, "-l", "!agentflow.dev/evaluation")["items"]:
        prompts = (item.get("status") or {}).get("prompts") or {}
        out[item["metadata"]["name"]] = str((prompts.get("triage") or {}).get("name"))
    return out


def events(cluster: Cluster, ns: str) -> list[str]:
    items = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.kind=PromptRollout")["items"]
    return [i["reason"] for i in sorted(items, key=lambda i: i.get("firstTimestamp") or "")]


def prompt_status(cluster: Cluster, ns: str) -> str:
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run([sys.executable, "-m", "agentflow.cli", "prompt", "status", "triage", "-n", ns],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_good_candidate_is_promoted_to_all_runs(cluster: Cluster, provider: RecordingProvider, ns: str) -> None:
    cluster.apply([*base(provider), version("triage-v2", "2"), rollout("triage-v2")], ns)
    status = wait_phase(cluster, ns, {"Progressing"})
    assert status["weight"] == 50
    status = drive(cluster, ns, {"Promoted", "RolledBack"})
    assert (status["phase"], status["weight"]) == ("Promoted", 100), status
    gate = status["gates"][0]
    assert gate["verdict"] == "Pass" and gate["candidate"] == 0.0 and gate["candidateSamples"] >= 3
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert set(chosen(cluster, ns).values()) == {"triage-v1", "triage-v2"}  # both got runs during the step
    cluster.apply([workflow("after")], ns)
    cluster.wait_until("the run after the promotion", lambda: finished(cluster, ns, ["after"]), timeout=300)
    assert chosen(cluster, ns)["after"] == "triage-v2"
    assert events(cluster, ns)[-2:] == ["RolloutStarted", "RolloutPromoted"]
    shown = prompt_status(cluster, ns)
    assert "phase Promoted" in shown and "schemaFailureRate" in shown and "Pass" in shown


def test_a_worse_candidate_is_rolled_back_automatically(cluster: Cluster, provider: RecordingProvider,
                                                        ns: str) -> None:
    cluster.apply([*base(provider), version("triage-v3", "3", worse=True), rollout("triage-v3")], ns)
    wait_phase(cluster, ns, {"Progressing"})
    status = drive(cluster, ns, {"Promoted", "RolledBack"})
    assert (status["phase"], status["weight"]) == ("RolledBack", 0), status
    gate = status["gates"][0]
    assert gate["verdict"] == "Fail" and gate["candidate"] > 0.5 and gate["stable"] == 0.0
    assert gate["pValue"] < gate["alpha"]
    assert "RolloutRolledBack" in events(cluster, ns)
    runs = chosen(cluster, ns)
    failed = {i["metadata"]["name"]: i["status"]["phase"]
              for i in cluster.get_json("workflows.agentflow.dev", "-n", ns)["items"]}
    assert any(failed[n] == "Failed" for n, v in runs.items() if v == "triage-v3")  # the schema broke
    assert all(failed[n] == "Succeeded" for n, v in runs.items() if v == "triage-v1")
    # every call reached the provider through the gateway: the candidate's prompt and its repairs are recorded
    assert any(WORSE in json.dumps(r["messages"]) for r in provider.requests)
    cluster.apply([workflow(f"after-{i}") for i in range(4)], ns)
    cluster.wait_until("the runs after the rollback",
                       lambda: finished(cluster, ns, [f"after-{i}" for i in range(4)]), timeout=300)
    assert {chosen(cluster, ns)[f"after-{i}"] for i in range(4)} == {"triage-v1"}
    shown = prompt_status(cluster, ns)
    assert "phase RolledBack" in shown and "rolled back: schemaFailureRate fail" in shown


def test_a_candidate_that_failed_its_evaluation_never_gets_traffic(cluster: Cluster, provider: RecordingProvider,
                                                                  ns: str) -> None:
    cluster.apply([*base(provider), version("triage-v4", "4", suite=True), rollout("triage-v4", required=True)], ns)
    status = wait_phase(cluster, ns, {"WaitingForEvaluation", "Failed"})
    assert status["weight"] == 0
    cluster.apply([workflow(f"early-{i}") for i in range(4)], ns)  # runs while the suite runs: none may get it
    status = wait_phase(cluster, ns, {"Failed"}, timeout=600)  # the operator's evaluation: its case as a pod
    assert (status["weight"], status["lastDecision"]["reason"]) == (0, "EvaluationFailed"), status
    pv = cluster.get_json("promptversions.agentflow.dev", "triage-v4", "-n", ns)
    assert pv["status"]["evaluation"]["phase"] == "Failed" and pv["status"]["evaluation"]["passRate"] == 0
    cluster.wait_until("the early runs", lambda: finished(cluster, ns, [f"early-{i}" for i in range(4)]),
                       timeout=300)
    cluster.apply([workflow(f"late-{i}") for i in range(4)], ns)
    cluster.wait_until("the late runs", lambda: finished(cluster, ns, [f"late-{i}" for i in range(4)]), timeout=300)
    assert set(chosen(cluster, ns).values()) == {"triage-v1"}  # not one run got the candidate
    assert "RolloutFailed" in events(cluster, ns)
