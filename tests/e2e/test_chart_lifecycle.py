"""The chart's whole life on a real cluster, with its defaults: install, run, uninstall, and nothing left behind.

``helm install`` of a copy of ``charts/`` as a clone has it (no ``helm dependency build``), with the README's
one value (``postgres.dsn``) plus ``watchNamespaces`` (this test's namespace: the operator must not drive other
sessions' Workflows, and it makes the RBAC namespaced, which is checked with ``kubectl auth can-i``). Default
images (``localhost/*:<appVersion>``, tagged by images.sh), default callback URL (the replica's pod IP: this
cluster has no DNS). The quickstart must succeed, the webhook must be live (it rejects a bad Workflow); then
``helm uninstall`` must take the admission configurations with it, so that a Workflow can be created afterwards
(a configuration left behind failing closed at a gone pod refused every create in the cluster), and leave no
cluster-scoped object of the release (CRDs excepted: Helm never deletes those, by design).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster, cluster_setting, fresh_namespace
from .test_operator import REPO, load_manifests, wait_finished
from .test_operator_incluster import (
    KINDS,
    WEBHOOK_CONFIG,
    helm,  # noqa: F401
    pod_reachable_postgres,
    run_helm,
    webhook_config_exists,
)

pytestmark = pytest.mark.e2e

APP_VERSION = yaml.safe_load((REPO / "charts/agentflow/Chart.yaml").read_text())["appVersion"]
CLUSTER_KINDS = ("clusterroles", "clusterrolebindings", "validatingwebhookconfigurations",
                 "mutatingwebhookconfigurations", "clusterkopfpeerings", "namespaces")
BAD_WORKFLOW = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad"},
                "spec": {"steps": [{"name": "a", "kind": "tool", "tool": "t", "dependsOn": ["nowhere"]}]}}
PLAIN_WORKFLOW = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "after"},
                  "spec": {"steps": [{"name": "a", "kind": "tool", "tool": "t"}]}}


def cluster_scoped(cluster: Cluster) -> set[str]:
    """KIND/NAME of the cluster-scoped objects a release of the chart could make (a kind the cluster does not
    have yet, kopf's peering before the chart brings its CRD, has none)."""
    names: set[str] = set()
    for kind in CLUSTER_KINDS:
        got = cluster.kubectl("get", kind, "-o", "name", check=False)
        if got.returncode == 0:
            names.update(got.stdout.split())
        else:
            assert "doesn't have a resource type" in got.stderr, got.stderr
    return names


def can_i(cluster: Cluster, account: str, *what: str) -> str:
    out = cluster.kubectl("auth", "can-i", *what, "--as", account, check=False)
    return out.stdout.strip()


def test_install_run_uninstall_with_the_defaults(
        cluster: Cluster, crds: None, step_images: None, helm: tuple[str, Path]) -> None:  # noqa: F811
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach PostgreSQL on this machine: set AGENTFLOW_E2E_HOST_ADDRESS")
    if webhook_config_exists(cluster):
        held = cluster.kubectl("get", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "-o", "json",
                               check=False).stdout
        message = f"{WEBHOOK_CONFIG} is held by another operator or release: {held[:500]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pod_cidr = cluster_setting("POD_CIDR") if cluster.local else os.environ.get("AGENTFLOW_E2E_POD_CIDR", "0.0.0.0/0")
    release = f"af-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-agentflow"
    before = cluster_scoped(cluster)
    with pod_reachable_postgres(host, pod_cidr) as dsn, fresh_namespace(cluster, "chart-") as namespace:
        account = f"system:serviceaccount:{namespace}:{fullname}"
        installed = False
        try:
            run_helm(helm, cluster, "install", release, str(helm[1]), "-n", namespace,
                     "--set-string", f"postgres.dsn={dsn}", "--set", f"watchNamespaces[0]={namespace}",
                     "--wait", "--timeout", "5m")
            installed = True
            ips = check_installed(cluster, namespace, release, account)
            check_runs(cluster, namespace, ips)
        finally:
            # The AgentFlow objects go first, while the operator can still remove their finalizers.
            cluster.kubectl("delete", KINDS, "--all", "-n", namespace, "--wait=true", "--timeout=120s",
                            check=False, timeout=150)
            uninstalled = run_helm(helm, cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout",
                                   "3m", check=False, timeout=240)
            cluster.kubectl("delete", "secret", f"{fullname}-signing", "-n", namespace, "--ignore-not-found",
                            check=False)  # kept by helm.sh/resource-policy: keep
        assert installed and uninstalled.returncode == 0, uninstalled.stderr + uninstalled.stdout
        # The operator's pods are still stopping (grace period): the configuration is gone all the same, as
        # helm deleted it, and a stopping replica cannot put it back (kopf only patches what exists).
        assert not webhook_config_exists(cluster), "the release's admission configurations outlived it"
        cluster.wait_until("the operator pods to stop", lambda: not cluster.get_json(
            "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"], timeout=150)
        assert not webhook_config_exists(cluster)

        # Anyone can create Workflows again (no webhook failing closed at a gone pod).
        cluster.apply(PLAIN_WORKFLOW, namespace)
        cluster.kubectl("delete", "workflow", "after", "-n", namespace, "--wait=true", "--timeout=60s")
        left = cluster_scoped(cluster) - before - {f"namespace/{namespace}"}
        assert not left, f"left behind: {sorted(left)}"
        assert can_i(cluster, account, "create", "pods", "-n", namespace) == "no"


def check_installed(cluster: Cluster, namespace: str, release: str, account: str) -> set[str]:
    """Checks the installed release; the operator pods' IPs."""
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images == {f"localhost/agentflow-operator:{APP_VERSION}"}, "the chart's default image, as images.sh tags it"

    # RBAC: Roles in the watched namespace, nothing that reaches kube-system's pods.
    assert can_i(cluster, account, "create", "pods", "-n", namespace) == "yes"
    assert can_i(cluster, account, "create", "pods", "-n", "kube-system") == "no"
    assert can_i(cluster, account, "delete", "pods", "-n", "kube-system") == "no"
    assert can_i(cluster, account, "list", "secrets", "-n", namespace) == "no"

    # The release's configuration, filled in by the operator: one webhook per handler at a replica's pod IP.
    ips = {p["status"]["podIP"] for p in pods}

    def webhooks() -> list[dict[str, Any]]:
        got = cluster.get_json("validatingwebhookconfiguration", WEBHOOK_CONFIG)
        assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        return list(got.get("webhooks") or [])

    cluster.wait_until("the operator to fill in the webhooks", lambda: bool(webhooks()), timeout=120)
    for hook in webhooks():
        url = hook["clientConfig"]["url"]
        assert any(f"https://{ip}:9443/" in url for ip in ips), (url, ips)
        assert hook["clientConfig"].get("caBundle")
    return ips


def check_runs(cluster: Cluster, namespace: str, operator_ips: set[str]) -> None:
    # The webhook is live: a Workflow depending on a step that does not exist is refused.
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(BAD_WORKFLOW), check=False)
    assert refused.returncode != 0 and "denied the request" in refused.stderr, refused.stderr

    example = REPO / "examples/manifests/quickstart.yaml"
    docs = load_manifests(example, podCleanup="never")
    cluster.apply(docs, namespace)
    name = next(d["metadata"]["name"] for d in docs if d["kind"] == "Workflow")
    started = time.monotonic()
    # Ready means the run succeeded: `kubectl wait` for it is what a user runs.
    waited = cluster.kubectl("wait", f"workflow/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=300s",
                             check=False, timeout=330)
    wf = wait_finished(cluster, namespace, name, timeout=60)
    assert waited.returncode == 0 and wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)[:3000]
    conditions = {c["type"]: c["status"] for c in wf["status"]["conditions"]}
    assert conditions["Reconciling"] == "False" and conditions["Stalled"] == "False"
    # The step pods ran the default step image and called back at a replica's pod IP.
    step_pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
    assert step_pods, f"no step pods after {time.monotonic() - started:.0f}s"
    for pod in step_pods:
        container = pod["spec"]["containers"][0]
        assert container["image"] == f"localhost/agentflow-runtime:{APP_VERSION}"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("AGENTFLOW_CALLBACK_URL") in {f"http://{ip}:8081" for ip in operator_ips}, env
