"""PromptVersion evaluation suites on a real cluster: a PromptVersion created with spec.evaluations gets its suite
run by the operator as a Workflow of gVisor step pods (the offline model through the gateway path of step pods),
and status.evaluation says Passed or Failed with the same numbers `agentflow prompt eval` gets locally; `agentflow
prompt eval --cluster` runs it again; `kubectl get afp` shows it. Not run in the unit tier (pytest -m e2e, a
cluster)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.k8s.names import pod_name
from agentflow.storage import PostgresStore
from services.evaluations import EXAMPLE, FAILING

from .conftest import Cluster
from .test_operator import (
    REPO,
    Operator,
    wait_finished,
)

pytestmark = pytest.mark.e2e

FINAL = ("Passed", "Failed", "Error")


def resources(text: str) -> list[dict[str, Any]]:
    """The example's Agents and PromptVersions (its Workflow left out: only the suites run)."""
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] != "Workflow"]


def local_eval(text: str, name: str, tmp: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    manifests = tmp / "manifests.yaml"
    manifests.write_text(text)
    env = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "prompt", "eval", name, "-f", str(manifests),
                          "--state-dir", str(tmp / "state"), "--json"], capture_output=True, text=True, env=env,
                         timeout=300, cwd=REPO)
    assert out.returncode in (0, 1), out.stderr
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def wait_evaluated(cluster: Cluster, namespace: str, name: str, trigger: str = "",
                   timeout: float = 600) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def final() -> bool:
        obj = cluster.get_json("promptversions.agentflow.dev", name, "-n", namespace)
        found.update((obj.get("status") or {}).get("evaluation") or {})
        return found.get("trigger", "") == trigger and found.get("phase") in FINAL

    cluster.wait_until(f"PromptVersion {namespace}/{name} to be evaluated", final, timeout=timeout, every=2)
    return found


def journal(dsn: str, uid: str) -> list[Any]:
    async def load() -> list[Any]:
        store = await PostgresStore.connect(dsn)
        try:
            return [r.event for r in await store.load_journal(uid)]
        finally:
            await store.close()

    return asyncio.run(load())


def case_pods(dsn: str, namespace: str, workflow: str, nodes: list[str]) -> dict[str, Any]:
    """What the operator recorded of each node's first attempt's pod (None: no pod was made for it)."""
    async def load() -> dict[str, Any]:
        store = await PostgresStore.connect(dsn)
        try:
            return {n: await store.attempt_of_pod(namespace, pod_name(workflow, n, 1)) for n in nodes}
        finally:
            await store.close()

    return asyncio.run(load())


@pytest.mark.parametrize("failing", [False, True], ids=["passing", "failing"])
def test_a_created_prompt_version_is_evaluated_in_step_pods_like_locally(
        cluster: Cluster, operator: Operator, op_namespace: str, postgres_dsn: str, tmp_path: Path,
        failing: bool) -> None:
    text = EXAMPLE.read_text().replace(*FAILING) if failing else EXAMPLE.read_text()
    cluster.apply(resources(text), op_namespace)
    for name in ("ticket-triage-v1", "ticket-triage-v2"):
        status = wait_evaluated(cluster, op_namespace, name)
        local = local_eval(text, name, tmp_path / name)
        assert status["phase"] == ("Passed" if local["passed"] else "Failed"), status
        assert (status["passRate"], status["meanScore"], status.get("winRate")) == (
            local["passRate"], local["meanScore"], local.get("winRate"))
        assert status["cases"] == len(local["cases"]) and status["passedCases"] == sum(
            c["passed"] for c in local["cases"])
        assert status["inputTokens"] > 0 and status["outputTokens"] > 0 and status["latencyP50Seconds"] >= 0
        assert status["startedAt"] and status["finishedAt"]
        if not local["passed"]:
            assert status["message"] == "; ".join(local["failures"])
        # The suite ran as a Workflow the PromptVersion owns, every case a step pod of its own.
        wf = wait_finished(cluster, op_namespace, status["workflow"])
        assert wf["metadata"]["labels"]["agentflow.dev/evaluation"] == name
        assert wf["metadata"]["ownerReferences"][0]["kind"] == "PromptVersion"
        events = journal(postgres_dsn, wf["metadata"]["uid"])
        cases = [f"case-{i}" for i in range(status["cases"])]
        assert set(cases) <= {e.node for e in events if e.type.value == "StepScheduled"}
        pods = case_pods(postgres_dsn, op_namespace, status["workflow"], cases)
        assert all(p is not None and p.pod_uid and p.ended for p in pods.values()), pods
    judges = cluster.get_json("promptversions.agentflow.dev", "-n", op_namespace,
                              "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
    assert sorted(j["metadata"]["name"].rsplit("-", 1)[0] for j in judges) == ["agentflow-judge",
                                                                                "agentflow-pairwise"]
    table = cluster.kubectl("get", "afp", "-n", op_namespace, "ticket-triage-v1").stdout
    assert "EVAL" in table and "PASS RATE" in table and ("Failed" if failing else "Passed") in table


def test_the_cli_runs_it_again(cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    cluster.apply(resources(EXAMPLE.read_text()), op_namespace)
    first = wait_evaluated(cluster, op_namespace, "ticket-triage-v1")
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "prompt", "eval", "ticket-triage-v1", "--cluster",
                          "-n", op_namespace, "--kubeconfig", cluster.kubeconfig, "--timeout", "600", "--json"],
                         capture_output=True, text=True, timeout=700, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO / "operator")})
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout)
    assert again["phase"] == "Passed" and again["workflow"] != first["workflow"] and again["trigger"]
    assert again["passRate"] == first["passRate"]
    workflows = cluster.get_json("workflows.agentflow.dev", "-n", op_namespace,
                                 "-l", "agentflow.dev/evaluation=ticket-triage-v1")["items"]
    assert {w["metadata"]["name"] for w in workflows} == {first["workflow"], again["workflow"]}
