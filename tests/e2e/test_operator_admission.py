"""Control through the real API server: the admission webhook, approvals and cancel.

The operator runs as a process on this machine (the `Operator` of test_operator.py), scoped to one
namespace of this module, with its admission webhook on: kopf writes the ValidatingWebhookConfiguration
``agentflow.dev`` with ``https://<webhook host>:<port>``, so the API server calls this process. The
webhook host is an address of this machine the API server reaches: 127.0.0.1 on the local cluster (its
API server runs here), else AGENTFLOW_E2E_WEBHOOK_HOST (default: the pod-reachable host address).

The webhook configurations are cluster-wide and fail closed; tests/e2e/admission.py says how the fixture
stops the operator and cleans up, and the last test checks the webhooks are gone.

Approvals: who decided is the user of the request that set the annotation, stamped by the mutating
webhook; the tests act as other users with impersonation (``kubectl --as``), which the local cluster's
admin may do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .admission import KINDS, admission_operator, drain, webhooks
from .conftest import Cluster
from .test_operator import REPO, Operator, free_port, wait_finished  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

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
    wf["spec"]["inputs"] = {"what": "it to jane.doe@example.com"}
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
def admitting_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                       steer_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with admission_operator(cluster, postgres_dsn, tmp_path_factory.mktemp("admission") / "operator.log",
                            steer_namespace, ["--webhook-references", "warn"]) as op:
        yield op


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


def test_hostile_numbers_and_nesting_are_refused_by_the_api_server_and_the_webhook(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str, tmp_path: Path) -> None:
    """The CRD bounds every number (1e300 seconds never reaches the operator); an object nested too deep for
    kopf's JSON decoder is refused by the webhook with the limit, not a 500."""
    huge = workflow("huge", [{"name": "a", "kind": "tool", "tool": "echo"}])
    huge["spec"]["timeoutSeconds"] = 1e300
    applied = cluster.kubectl("create", "-n", steer_namespace, "-f", str(write(tmp_path, "huge", [huge])),
                              check=False)
    assert applied.returncode != 0 and "spec.timeoutSeconds" in applied.stderr, applied.stderr
    assert "less than or equal to" in applied.stderr, applied.stderr
    deep = workflow("deep", [{"name": "a", "kind": "tool", "tool": "echo"}])
    deep["spec"]["inputs"] = {"x": "DEEP"}
    path = tmp_path / "deep.json"  # written by hand: json.dumps itself refuses 2,000 levels
    path.write_text(json.dumps(deep).replace('"DEEP"', "[" * 2000 + '"leaf"' + "]" * 2000))
    created = cluster.kubectl("create", "-n", steer_namespace, "-f", str(path), check=False)
    assert created.returncode != 0, created.stdout
    assert "nested deeper than 100 levels" in created.stderr, created.stderr
    gone = cluster.kubectl("get", "workflows.agentflow.dev", "deep", "-n", steer_namespace, check=False)
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


def whoami(cluster: Cluster) -> str:
    """The user the kubeconfig authenticates as (kubernetes-admin on the local cluster)."""
    return cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()


def test_agentflow_approve_against_the_cluster(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str) -> None:
    ns, name = steer_namespace, "approved"
    admin = whoami(cluster)
    cluster.apply([TOOLS, gated(name)], ns)
    wait_phase(cluster, ns, name, "Waiting")
    described = cluster.kubectl("describe", "workflows.agentflow.dev", name, "-n", ns).stdout
    assert "WaitingForApproval" in described
    assert f"agentflow approve {name} gate" in " ".join(described.split()), described

    # Not a waiting step: refused, saying which one waits.
    wrong = agentflow("approve", name, "ship", "--namespace", ns, "--kubeconfig", cluster.kubeconfig)
    assert wrong.returncode == 2, wrong.stdout
    assert "step ship of workflow approved does not wait for approval (waiting: gate)" in wrong.stderr

    # The question is in the node's status, its personal data masked; never in an Event.
    waiting = cluster.get_json("workflows.agentflow.dev", name, "-n", ns)["status"]["nodes"]["gate"]
    assert waiting["message"] == "waits for approval: ship it to <EMAIL>?", waiting
    assert not [e for e in events(cluster, ns, name) if "jane" in e["message"] or "ship it" in e["message"]]

    # Who decides is who asks: --by is refused on a cluster.
    claimed = agentflow("approve", name, "gate", "--namespace", ns, "--kubeconfig", cluster.kubeconfig,
                        "--by", "alice")
    assert claimed.returncode == 2 and "--by" in claimed.stderr, claimed.stderr
    done = agentflow("approve", name, "gate", "--namespace", ns, "--kubeconfig", cluster.kubeconfig,
                     "--reason", "ok")
    assert done.returncode == 0, done.stderr
    assert f"gate approved in workflow {ns}/{name}" in done.stdout

    wf = wait_finished(cluster, ns, name, timeout=180)
    status = wf["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    assert json.loads(status["nodes"]["gate"]["outputPreview"]) == {
        "approved": True, "by": admin, "reason": "ok"}
    assert status["outputs"] == {"ship": {"shipped": True}}
    approved = [e for e in events(cluster, ns, name) if e["reason"] == "Approved"]
    assert approved and approved[0]["message"].startswith(f"step gate approved by {admin}"), approved
    assert "ok" in approved[0]["message"]
    # The reconciler removed the annotation once the decision was journalled.
    assert "agentflow.dev/approve" not in (wf["metadata"].get("annotations") or {})

    finished = agentflow("approve", name, "gate", "-n", ns, "--kubeconfig", cluster.kubeconfig)
    assert finished.returncode == 2 and "has finished (Succeeded)" in finished.stderr, finished.stderr


def test_a_rejection_by_annotation_fails_the_workflow_with_the_reason(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str) -> None:
    ns, name = steer_namespace, "rejected"
    admin = whoami(cluster)
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
    # The annotation claimed bob; the webhook wrote who really asked.
    assert rejected[0]["message"] == f"step gate rejected by {admin}: too risky", rejected


def test_only_an_approver_may_decide_and_a_request_cannot_make_itself_one(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str) -> None:
    ns, name = steer_namespace, "release"
    wf = gated(name)
    wf["spec"]["steps"][0]["approval"]["approvers"] = ["release-managers", "carol"]
    # Users and a service account of the namespace allowed to change Workflows there and to approve (RBAC's
    # approve on workflows/approval), nothing more: the step's approvers narrow who of them decides.
    cluster.apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "workflow-editors"},
         "rules": [{"apiGroups": ["agentflow.dev"], "resources": ["workflows"],
                    "verbs": ["get", "list", "patch", "update"]},
                   {"apiGroups": ["agentflow.dev"], "resources": ["workflows/approval"], "verbs": ["approve"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "workflow-editors"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "workflow-editors"},
         "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"},
                      {"kind": "User", "name": "dave", "apiGroup": "rbac.authorization.k8s.io"},
                      {"kind": "ServiceAccount", "name": "ci", "namespace": ns}]},
        TOOLS, wf], ns)
    wait_phase(cluster, ns, name, "Waiting")
    annotate = ("annotate", "workflows.agentflow.dev", name, "-n", ns, "--overwrite")

    # A namespace's service account allowed to patch Workflows (here: impersonated) is not an approver.
    ci = cluster.kubectl(*annotate, "agentflow.dev/approve=gate", f"--as=system:serviceaccount:{ns}:ci",
                         "--as-group=system:serviceaccounts", check=False)
    assert ci.returncode != 0 and "may not decide step gate" in ci.stderr, ci.stderr
    # Nor can a request add its user to the approvers while deciding: the approvers before it count.
    wf["spec"]["steps"][0]["approval"]["approvers"] = ["mallory"]
    wf["metadata"]["annotations"] = {"agentflow.dev/approve": "gate"}
    forged = cluster.kubectl("apply", "-n", ns, "--as=mallory", "--as-group=system:authenticated", "-f", "-",
                             input=json.dumps(wf), check=False)
    assert forged.returncode != 0 and "mallory may not decide" in forged.stderr, forged.stderr
    assert cluster.get_json("workflows.agentflow.dev", name, "-n", ns)["status"]["phase"] == "Waiting"

    member = cluster.kubectl(*annotate, 'agentflow.dev/approve={"node": "gate", "by": "carol", "reason": "go"}',
                             "--as=dave", "--as-group=release-managers", "--as-group=system:authenticated")
    assert member.returncode == 0, member.stderr
    status = wait_finished(cluster, ns, name, timeout=180)["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
    assert json.loads(status["nodes"]["gate"]["outputPreview"])["by"] == "dave"


def test_a_tool_policy_granting_the_api_server_or_metadata_is_refused_naming_the_field(
        cluster: Cluster, admitting_operator: Operator, steer_namespace: str, tmp_path: Path) -> None:
    policy = {"apiVersion": API, "kind": "ToolPolicy", "metadata": {"name": "reach-in"}, "spec": {"tools": [
        {"name": "meta", "http": {"url": "http://169.254.169.254/latest/meta-data/iam/"}},
        {"name": "api", "http": {"url": "https://10.96.0.1:443/api/v1/secrets"}},
        {"name": "loop", "http": {"url": "http://2130706433:8081/v1/attempt"}},
        {"name": "fine", "http": {"url": "http://93.184.216.34/"}},
    ]}}
    refused = dry_run(cluster, steer_namespace, write(tmp_path, "reach-in", [policy]))
    assert refused.returncode != 0
    for field in ("spec.tools[0].http.url", "spec.tools[1].http.url", "spec.tools[2].http.url"):
        assert field in refused.stderr, refused.stderr
    assert "spec.tools[3]" not in refused.stderr


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
