"""Control through the real API server: the admission webhook, approvals and cancel.

The operator runs as a process on this machine (the `Operator` of test_operator.py), scoped to one
namespace of this module, with its admission webhook on: kopf writes the ValidatingWebhookConfiguration
``agentflow.dev`` with ``https://<webhook host>:<port>``, so the API server calls this process. The
webhook host is an address of this machine the API server reaches: 127.0.0.1 on the local cluster (its
API server runs here), else AGENTFLOW_E2E_WEBHOOK_HOST (default: the pod-reachable host address).

The webhook configuration is cluster-wide and its webhooks fail closed (kopf writes
``failurePolicy: Fail``): while it points at a dead port, no Workflow can be created or changed anywhere
in the cluster. kopf removes its webhooks when the operator stops normally (on SIGTERM its configuration
manager patches ``webhooks`` down to the persistent ones, which we have none of) but leaves the object;
an operator that is killed leaves them in place. So the fixture stops the operator with SIGTERM, the
last test checks the webhooks are gone, and the fixture then deletes both configurations, whatever
happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster
from .test_operator import REPO, Operator, crds, free_port, step_images, wait_finished  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

CONFIG = "agentflow.dev"  # the configurations kopf manages (settings.admission.managed)
DENIED = 'admission webhook "validate-workflows.agentflow.dev" denied the request'
API = "agentflow.dev/v1alpha1"


def workflow(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name}, "spec": {"steps": steps}}


TOOLS = {"apiVersion": API, "kind": "ToolPolicy", "metadata": {"name": "recorder"},
         "spec": {"tools": [{"name": "record", "builtin": {"name": "echo"}}]}}
BAD = workflow("bad", [
    {"name": "a", "kind": "approval", "dependsOn": ["b"]},
    {"name": "b", "kind": "approval", "dependsOn": ["a"], "when": "steps.a.output.x >= "},
])
UNKNOWN_AGENT = workflow("unknown-agent", [{"name": "ask", "kind": "tool", "tool": "record",
                                           "agentRef": {"name": "nobody"}}])


def gated(name: str) -> dict[str, Any]:
    """A gate a human decides, then one tool step in a gVisor pod."""
    wf = workflow(name, [
        {"name": "gate", "kind": "approval", "approval": {"message": "ship ${{ inputs.what }}?"}},
        {"name": "ship", "kind": "tool", "tool": "record", "dependsOn": ["gate"], "inputs": {"shipped": True}},
    ])
    wf["spec"]["inputs"] = {"what": "it"}
    return wf


def write(tmp: Path, name: str, docs: list[dict[str, Any]]) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def agentflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def validate_lines(path: Path) -> list[str]:
    """`agentflow validate`'s problems without their ``file:line:`` prefix: ``<field path>: <message>``."""
    out = agentflow("validate", str(path))
    assert out.returncode == 2, out.stdout + out.stderr
    problems = [line for line in out.stderr.splitlines() if line.startswith(f"{path}:")]
    return [line.split(": ", 1)[1] for line in problems]


def webhooks(cluster: Cluster) -> list[dict[str, Any]] | None:
    """The webhooks of the managed ValidatingWebhookConfiguration; None when it does not exist."""
    got = cluster.kubectl("get", "validatingwebhookconfiguration", CONFIG, "-o", "json", check=False)
    return json.loads(got.stdout).get("webhooks") or [] if got.returncode == 0 else None


@pytest.fixture(scope="module")
def steer_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-adm-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_until("default service account", lambda: cluster.kubectl(
        "-n", name, "get", "sa", "default", check=False).returncode == 0, timeout=60, every=0.5)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def admitting_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,  # noqa: F811
                       steer_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    hook_host = os.environ.get("AGENTFLOW_E2E_WEBHOOK_HOST") or ("127.0.0.1" if cluster.local else host)
    existing = webhooks(cluster)
    if existing:
        urls = [w["clientConfig"].get("url") for w in existing]
        pytest.skip(f"ValidatingWebhookConfiguration {CONFIG} is in use (webhooks at {urls}): another operator "
                    "serves admission on this cluster; running a second one would take it over")
    port = free_port(hook_host)
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("admission") / "operator.log", extra_args=[
        "--namespace", steer_namespace, "--webhook-host", hook_host, "--webhook-listen", f"{hook_host}:{port}",
        "--webhook-references", "warn"])
    try:
        op.start()
        url = f"https://{hook_host}:{port}/validate-workflows"
        cluster.wait_until(f"kopf to point the webhooks at {url}", lambda: any(
            w["clientConfig"].get("url") == url for w in webhooks(cluster) or []), timeout=60)
        yield op
    finally:
        drain(cluster, steer_namespace, op)
        op.stop()  # SIGTERM: kopf removes its webhooks (checked by the last test)
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, CONFIG, "--ignore-not-found", check=False)


KINDS = "workflows.agentflow.dev,agents.agentflow.dev,promptversions.agentflow.dev,budgets.agentflow.dev," \
        "toolpolicies.agentflow.dev"


def drain(cluster: Cluster, namespace: str, op: Operator) -> None:
    """Delete the module's AgentFlow objects while the operator runs: it removes their finalizers (without
    it, the namespace would stay Terminating)."""
    if op.proc is not None and op.proc.poll() is None:
        cluster.kubectl("delete", KINDS, "--all", "-n", namespace, "--wait=true", "--timeout=120s", check=False,
                        timeout=150)


def dry_run(cluster: Cluster, namespace: str, path: Path) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)


def test_a_bad_workflow_is_rejected_with_the_field_paths_of_agentflow_validate(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str, tmp_path: Path) -> None:
    path = write(tmp_path, "bad", [BAD])
    expected = validate_lines(path)
    assert [line.split(":", 1)[0] for line in expected] == ["spec.steps[0].dependsOn", "spec.steps[1].when"]

    applied = cluster.kubectl("apply", "-n", steer_namespace, "-f", str(path), check=False)
    assert applied.returncode != 0, applied.stdout
    assert DENIED in applied.stderr
    assert "Workflow/bad has 2 problems:" in applied.stderr
    for line in expected:
        assert f"- {line}" in applied.stderr, f"{line!r} not in:\n{applied.stderr}"
    gone = cluster.kubectl("get", "workflows.agentflow.dev", "bad", "-n", steer_namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_a_valid_workflow_is_admitted_without_warnings(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str, tmp_path: Path) -> None:
    path = write(tmp_path, "fine", [TOOLS, workflow("fine", [{"name": "gate", "kind": "approval"}])])
    assert agentflow("validate", str(path)).returncode == 0
    applied = cluster.kubectl("apply", "-n", steer_namespace, "-f", str(path), check=False)
    assert applied.returncode == 0, applied.stderr
    assert "Warning" not in applied.stderr, applied.stderr
    assert cluster.get_json("workflows.agentflow.dev", "fine", "-n", steer_namespace)["metadata"]["uid"]
    cluster.kubectl("delete", "workflows.agentflow.dev", "fine", "-n", steer_namespace, "--wait=false")


def test_an_unknown_agent_is_admitted_with_a_warning(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str, tmp_path: Path) -> None:
    [expected] = validate_lines(write(tmp_path, "with-tools", [TOOLS, UNKNOWN_AGENT]))
    path = write(tmp_path, "unknown-agent", [UNKNOWN_AGENT])
    cluster.apply(TOOLS, steer_namespace)
    warning = f"Warning: {expected}"
    assert expected.startswith("spec.steps[0].agentRef.name: unknown Agent 'nobody'")
    # The webhook's catalog is the operator's index, a watch event behind the API server: wait for the tool.
    cluster.wait_until("the ToolPolicy in the operator's index", lambda: (
        (d := dry_run(cluster, steer_namespace, path)).returncode == 0 and "record" not in d.stderr), timeout=30)
    applied = cluster.kubectl("apply", "-n", steer_namespace, "-f", str(path), check=False)
    assert applied.returncode == 0, applied.stderr
    warnings = [line for line in applied.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == [warning], applied.stderr
    assert cluster.get_json("workflows.agentflow.dev", "unknown-agent", "-n", steer_namespace)["metadata"]["uid"]


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(cluster.get_json("workflows.agentflow.dev", name, "-n", namespace))
        return (seen.get("status") or {}).get("phase") == phase

    cluster.wait_until(f"workflow {namespace}/{name} to be {phase}", reached, timeout=timeout)
    return seen


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return items


def test_agentflow_approve_against_the_cluster(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str) -> None:
    ns, name = steer_namespace, "approved"
    cluster.apply([TOOLS, gated(name)], ns)
    wait_phase(cluster, ns, name, "Waiting")
    described = cluster.kubectl("describe", "workflows.agentflow.dev", name, "-n", ns).stdout
    assert "WaitingForApproval" in described
    assert f"agentflow approve {name} gate" in " ".join(described.split()), described

    # Not a waiting step: refused, saying which one waits.
    wrong = agentflow("approve", name, "ship", "--namespace", ns, "--kubeconfig", cluster.kubeconfig)
    assert wrong.returncode == 2, wrong.stdout
    assert "step ship of workflow approved does not wait for approval (waiting: gate)" in wrong.stderr

    done = agentflow("approve", name, "gate", "--namespace", ns, "--kubeconfig", cluster.kubeconfig,
                     "--by", "alice", "--reason", "ok")
    assert done.returncode == 0, done.stderr
    assert f"gate approved in workflow {ns}/{name}" in done.stdout

    wf = wait_finished(cluster, ns, name, timeout=180)
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    assert json.loads(status["nodes"]["gate"]["outputPreview"]) == {"approved": True, "by": "alice", "reason": "ok"}
    assert status["outputs"] == {"ship": {"shipped": True}}
    approved = [e for e in events(cluster, ns, name) if e["reason"] == "Approved"]
    assert approved and approved[0]["message"].startswith("step gate approved by alice"), approved
    assert "ok" in approved[0]["message"]
    # The reconciler removed the annotation once the decision was journalled.
    assert "agentflow.dev/approve" not in (wf["metadata"].get("annotations") or {})

    finished = agentflow("approve", name, "gate", "-n", ns, "--kubeconfig", cluster.kubeconfig)
    assert finished.returncode == 2 and "has finished (Succeeded)" in finished.stderr, finished.stderr


def test_a_rejection_by_annotation_fails_the_workflow_with_the_reason(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str) -> None:
    ns, name = steer_namespace, "rejected"
    cluster.apply([TOOLS, gated(name)], ns)
    wait_phase(cluster, ns, name, "Waiting")
    decision = json.dumps({"node": "gate", "by": "bob", "reason": "too risky"})
    cluster.kubectl("annotate", "workflows.agentflow.dev", name, "-n", ns, f"agentflow.dev/reject={decision}")
    status = wait_finished(cluster, ns, name, timeout=120)["status"]
    assert status["phase"] == "Failed", json.dumps(status, indent=2)
    assert status["nodes"]["gate"]["phase"] == "Failed"
    assert "too risky" in json.dumps(status), json.dumps(status, indent=2)
    assert status["nodes"].get("ship", {}).get("phase") in (None, "Pending", "Skipped", "Cancelled")
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True", failed
    rejected = [e for e in events(cluster, ns, name) if e["reason"] == "Rejected"]
    assert rejected and rejected[0]["type"] == "Warning"
    assert rejected[0]["message"] == "step gate rejected by bob: too risky", rejected


def test_agentflow_cancel_against_the_cluster(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str) -> None:
    ns, name = steer_namespace, "cancelled"
    cluster.apply([TOOLS, gated(name)], ns)
    wait_phase(cluster, ns, name, "Waiting")
    done = agentflow("cancel", name, "--namespace", ns, "--kubeconfig", cluster.kubeconfig)
    assert done.returncode == 0, done.stderr
    assert cluster.get_json("workflows.agentflow.dev", name, "-n", ns)["spec"]["cancel"] is True
    status = wait_finished(cluster, ns, name, timeout=120)["status"]
    assert status["phase"] == "Cancelled", json.dumps(status, indent=2)
    missing = agentflow("cancel", "no-such-workflow", "-n", ns, "--kubeconfig", cluster.kubeconfig)
    assert missing.returncode == 2 and f"no workflow no-such-workflow in namespace {ns}" in missing.stderr


def test_zz_stopping_the_operator_removes_its_webhooks(cluster: Cluster, admitting_operator: Operator,
                                                       steer_namespace: str) -> None:
    """Last in this module (pytest keeps file order): it stops the module's operator."""
    assert webhooks(cluster), "the operator serves admission"
    drain(cluster, steer_namespace, admitting_operator)
    assert not cluster.get_json(KINDS, "-n", steer_namespace)["items"]
    admitting_operator.stop()
    assert admitting_operator.proc is not None and admitting_operator.proc.returncode == 0
    assert webhooks(cluster) == [], "a stopped operator must not leave fail-closed webhooks behind"
