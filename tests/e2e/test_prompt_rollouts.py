"""Canary rollouts gated on evidence, on a real cluster: a PromptRollout moves a prompt family's runs from its
stable PromptVersion to a candidate step by step, on what the runs' journals in PostgreSQL say.

The operator of test_operator.py runs the steps with the offline model (``AGENTFLOW_MODEL_MODE=offline``, the
fake provider of the e2e tier: deterministic, no key, no network). Its answers are valid against the outputSchema
unless told what to answer: the worse candidate's prompt tells it to answer text that is not JSON
(``[[answer]]...[[/answer]]``, also on the repair requests), so every attempt of that version breaks the schema.

    good candidate        evaluationGate.required false (no suite); schemaFailureRate equal -> Promoted, 100 %
    worse candidate       schemaFailureRate 100 % vs 0 % -> RolledBack automatically, weight 0
    failed evaluation     a suite whose assertion cannot hold; status.evaluation Failed (written by the operator's
                          evaluation runs when they exist, else by this test, as they would) -> Failed, and no run
                          ever gets the candidate

Small numbers keep the wall time low: one step at 50 %, minRuns 3, minSamples 3, confidence 0.9. Each decision
is also an Event, and ``agentflow prompt status FAMILY -n NS`` explains it with the numbers. Not run in the unit
tier (pytest -m e2e, a cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import Cluster
from .test_operator import REPO, Operator, crds, step_images  # noqa: F401

pytestmark = pytest.mark.e2e

API = "agentflow.dev/v1alpha1"
OUTPUT_SCHEMA = {"type": "object", "required": ["category"],
                 "properties": {"category": {"type": "string", "enum": ["billing", "technical", "other"]}}}


def version(name: str, label: str, *, broken: bool = False, suite: bool = False) -> dict[str, Any]:
    messages = [{"role": "system", "content": f"Classify the ticket ({label})."},
                {"role": "user", "content": "Ticket: ${{ inputs.ticket }}"}]
    if broken:  # the offline model answers this, word for word, to the request and to every repair request
        messages[0]["content"] += " [[answer]]I think it is billing, probably.[[/answer]]"
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


BASE = [
    {"apiVersion": API, "kind": "Agent", "metadata": {"name": "triage-agent"},
     "spec": {"role": "support triage", "instructions": "Classify tickets.",
              "model": {"name": "openai/gpt-4o-mini", "temperature": 0, "maxTokens": 200}}},
    version("triage-v1", "1"),
]


def workflow(name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name},
            "spec": {"inputs": {"ticket": "I was charged twice, please refund"},
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


def test_a_good_candidate_is_promoted_to_all_runs(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    ns = op_namespace
    cluster.apply([*BASE, version("triage-v2", "2"), rollout("triage-v2")], ns)
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


def test_a_worse_candidate_is_rolled_back_automatically(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    ns = op_namespace
    cluster.apply([*BASE, version("triage-v3", "3", broken=True), rollout("triage-v3")], ns)
    wait_phase(cluster, ns, {"Progressing"})
    status = drive(cluster, ns, {"Promoted", "RolledBack"})
    assert (status["phase"], status["weight"]) == ("RolledBack", 0), status
    gate = status["gates"][0]
    assert gate["verdict"] == "Fail" and gate["candidate"] == 1.0 and gate["stable"] == 0.0
    assert gate["pValue"] < gate["alpha"]
    assert "RolloutRolledBack" in events(cluster, ns)
    runs = chosen(cluster, ns)
    failed = {i["metadata"]["name"]: i["status"]["phase"]
              for i in cluster.get_json("workflows.agentflow.dev", "-n", ns)["items"]}
    assert all(failed[n] == "Failed" for n, v in runs.items() if v == "triage-v3")  # the schema broke each time
    cluster.apply([workflow(f"after-{i}") for i in range(4)], ns)
    cluster.wait_until("the runs after the rollback",
                       lambda: finished(cluster, ns, [f"after-{i}" for i in range(4)]), timeout=300)
    assert {chosen(cluster, ns)[f"after-{i}"] for i in range(4)} == {"triage-v1"}
    shown = prompt_status(cluster, ns)
    assert "phase RolledBack" in shown and "rolled back: schemaFailureRate fail" in shown


def test_a_candidate_that_failed_its_evaluation_never_gets_traffic(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    ns = op_namespace
    cluster.apply([*BASE, version("triage-v4", "4", suite=True), rollout("triage-v4", required=True)], ns)
    status = wait_phase(cluster, ns, {"WaitingForEvaluation", "Failed"})
    assert status["weight"] == 0
    cluster.apply([workflow(f"early-{i}") for i in range(4)], ns)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and rollout_status(cluster, ns).get("phase") != "Failed":
        pv = cluster.get_json("promptversions.agentflow.dev", "triage-v4", "-n", ns)
        if not ((pv.get("status") or {}).get("evaluation") or {}).get("phase"):
            # no evaluation runner on this cluster: write the result its suite has (the assertion cannot hold)
            cluster.kubectl("patch", "promptversions.agentflow.dev", "triage-v4", "-n", ns, "--subresource=status",
                            "--type=merge", "-p", json.dumps({"status": {"evaluation": {
                                "phase": "Failed", "passRate": 0.0, "message": "1 of 1 cases failed"}}}))
        time.sleep(3)
    status = wait_phase(cluster, ns, {"Failed"})
    assert (status["weight"], status["lastDecision"]["reason"]) == (0, "EvaluationFailed"), status
    cluster.wait_until("the early runs", lambda: finished(cluster, ns, [f"early-{i}" for i in range(4)]),
                       timeout=300)
    cluster.apply([workflow(f"late-{i}") for i in range(4)], ns)
    cluster.wait_until("the late runs", lambda: finished(cluster, ns, [f"late-{i}" for i in range(4)]), timeout=300)
    assert set(chosen(cluster, ns).values()) == {"triage-v1"}  # not one run got the candidate
    assert "RolloutFailed" in events(cluster, ns)
