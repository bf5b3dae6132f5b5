"""The operator image in the cluster, installed with the Helm chart: two replicas sharing the work (issue 17).

``helm install`` of charts/agentflow with the local images (localhost/agentflow-operator:dev, pull policy
Never), scoped to the test's namespace (``watchNamespaces``: the replicas never touch other engineers'
Workflows). The chart's default with two replicas is ``--shards auto``: each replica holds a Lease in the
release's namespace (here the test's) and acts on the Workflows whose uid hashes to it (agentflow.k8s.shards);
one replica is then deleted and the next runs are taken by the other. PostgreSQL is a real server on this
machine that pods reach: its own initdb/pg_ctl instance listening on the pod-reachable host address, with
a password (scram-sha-256) required from the pod CIDR.

The local cluster has no cluster DNS, so step pods cannot resolve the Service's name: the chart's
``callback.url`` is set to ``http://$(POD_IP):8081``, the address of the replica that starts the step.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services import postgres

from .conftest import Cluster, cluster_setting
from .test_operator import REPO, free_port, load_manifests, local_outputs, wait_finished

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "agentflow"
OPERATOR_IMAGE = os.environ.get("AGENTFLOW_E2E_OPERATOR_IMAGE", "localhost/agentflow-operator:dev")
WEBHOOK_CONFIG = "agentflow.dev"
KINDS = "workflows.agentflow.dev,agents.agentflow.dev,promptversions.agentflow.dev,budgets.agentflow.dev," \
        "toolpolicies.agentflow.dev,workflowschedules.agentflow.dev,workflowtemplates.agentflow.dev," \
        "workflowtriggers.agentflow.dev,promptrollouts.agentflow.dev"


@contextlib.contextmanager
def pod_reachable_postgres(listen: str, clients: str) -> Iterator[str]:
    """A throwaway PostgreSQL on ``listen`` that ``clients`` (a CIDR) reach with a password; its DSN.

    tests/services/postgres.py listens on 127.0.0.1 only, with trust: pods need another address, and a
    password since the network is shared. Its helpers find (or install) the binaries and run them as the
    postgres user when we are root; its PostgresServer stops the server and removes the files.
    """
    try:
        bin_dir = postgres.find_bin_dir() or postgres.install_postgres()
    except postgres.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL in CI: {exc}")
        pytest.skip(f"no PostgreSQL: {exc}")
    base = Path(tempfile.mkdtemp(prefix="agentflow-pg-pods-"))
    server = postgres.PostgresServer(dsn="", data_dir=base / "data", bin_dir=bin_dir, base_dir=base)
    try:
        base.chmod(0o755)
        data, sockets, log, pwfile = base / "data", base / "sock", base / "server.log", base / "password"
        for d in (data, sockets):
            d.mkdir(mode=0o700)
            postgres._give_to_postgres(d)
        password = secrets.token_urlsafe(24)
        for f, text in ((log, ""), (pwfile, password)):
            f.write_text(text)
            f.chmod(0o600)
            postgres._give_to_postgres(f)
        postgres._run_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
                                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
                                   "--no-sync"])
        pwfile.unlink()
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all postgres {clients} scram-sha-256\n")
        port = free_port(listen)
        options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1,{listen} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        postgres._run_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                                   "-t", "60", "start"])
        postgres._run_as_postgres([str(bin_dir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", "postgres",
                                   "agentflow"])
        yield f"postgresql://postgres:{password}@{listen}:{port}/agentflow"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The helm binary (tests/e2e/tools/helm.sh) and a copy of charts/agentflow as a clone has it.

    No `helm dependency build`: the CRDs subchart is a folder of the chart. The copy keeps helm's caches in the
    temporary folder; helm.sh builds helm from the Go module proxy once and caches it.
    """
    out = subprocess.run(["bash", str(REPO / "tests/e2e/tools/helm.sh")], capture_output=True, text=True,
                         timeout=1800, check=False)
    if out.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"no helm: {out.stderr[-500:]}")
        pytest.skip(f"no helm: {out.stderr[-500:]}")
    binary = out.stdout.strip()
    charts = tmp_path_factory.mktemp("clone") / "charts"
    shutil.copytree(CHART.parent, charts, symlinks=True, ignore=shutil.ignore_patterns("*.tgz"))
    return binary, charts / CHART.name


def helm_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HELM_CACHE_HOME": str(home / "helm-cache"), "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data")}


def run_helm(helm: tuple[str, Path], cluster: Cluster, *args: str, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    binary, chart = helm
    out = subprocess.run([binary, "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True,
                         timeout=timeout, check=False, env=helm_env(chart.parent.parent))
    if not check:
        return out
    assert out.returncode == 0, f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr}{out.stdout}"
    return out


def webhook_config_exists(cluster: Cluster) -> bool:
    """Whether some release or operator holds the cluster-wide configuration agentflow.dev (a chart installing
    it then fails: it belongs to another owner)."""
    return any(cluster.kubectl("get", kind, WEBHOOK_CONFIG, check=False).returncode == 0
               for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"))


def pod_logs(cluster: Cluster, namespace: str, pod: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, pod, "-c", "operator").stdout


def test_two_replicas_from_the_chart_share_the_quickstarts_and_take_over_from_each_other(
        cluster: Cluster, crds: None, step_images: None, helm: tuple[str, Path], namespace: str,
        tmp_path: Path) -> None:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach PostgreSQL on this machine: set AGENTFLOW_E2E_HOST_ADDRESS")
    # Who may connect (with the password): the pod network, or anyone when it is not known.
    pod_cidr = cluster_setting("POD_CIDR") if cluster.local else os.environ.get("AGENTFLOW_E2E_POD_CIDR", "0.0.0.0/0")
    release = f"af-{uuid.uuid4().hex[:6]}"
    # The webhook configuration is cluster-wide (one name, agentflow.dev): take it only when nobody holds it.
    webhook = not webhook_config_exists(cluster)
    repository, _, tag = OPERATOR_IMAGE.rpartition(":")
    with pod_reachable_postgres(host, pod_cidr) as dsn:
        values = {
            "image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never",
            "replicaCount": "2", "crds.enabled": "false",
            "watchNamespaces[0]": namespace, "postgres.dsn": dsn,
            "callback.url": "http://$(POD_IP):8081", "steps.env.AGENTFLOW_MODEL_MODE": "offline",
            "webhook.enabled": str(webhook).lower(),
        }
        sets = [arg for k, v in values.items() for arg in ("--set-string" if k.endswith(("dsn", "url", "tag"))
                                                           else "--set", f"{k}={v}")]
        try:
            run_helm(helm, cluster, "install", release, str(helm[1]), "-n", namespace, *sets, "--wait",
                     "--timeout", "5m")
            check_quickstart(cluster, namespace, release, tmp_path)
        finally:
            # The AgentFlow objects go first, while the operator can still remove their finalizers.
            cluster.kubectl("delete", KINDS, "--all", "-n", namespace, "--wait=true", "--timeout=120s", check=False,
                            timeout=150)
            remaining = cluster.kubectl("get", KINDS, "-n", namespace, "-o", "name", check=False).stdout.split()
            uninstalled = run_helm(helm, cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "3m",
                                   check=False, timeout=240)
            cluster.kubectl("delete", "secret", f"{release}-agentflow-signing", "-n", namespace, "--ignore-not-found",
                            check=False)  # kept by helm.sh/resource-policy
            # `helm uninstall --wait` waits for the Deployment, not its pods: they stop within their grace period
            # (kopf removes its webhooks as it stops).
            cluster.wait_until("the operator pods to stop", lambda: not cluster.get_json(
                "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"], timeout=150)
    assert not remaining, f"left with finalizers: {remaining}"
    assert uninstalled.returncode == 0, uninstalled.stderr
    # A replica deletes its Lease as it stops, unless `helm uninstall` removed its Role first (they go at the same
    # time): a Lease left behind names a replica that is gone and expires on its own; the namespace takes it.
    if webhook:  # the release's: gone with it
        assert not webhook_config_exists(cluster)


def leases(cluster: Cluster, namespace: str, release: str) -> dict[str, Any]:
    """The replicas' Leases by holder (the shard group is the chart's fullname)."""
    items = cluster.get_json("leases", "-n", namespace, "-l", f"agentflow.dev/shard-group={release}-agentflow")["items"]
    return {item["spec"]["holderIdentity"]: item for item in items}


def operator_pods(cluster: Cluster, namespace: str, release: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def both_active(cluster: Cluster, namespace: str, names: list[str]) -> bool:
    """Each replica logged that it acts with both as members (a newcomer waits one lease duration)."""
    return all(f"shards: replica {pod} active, members {', '.join(names)} " in pod_logs(cluster, namespace, pod)
               for pod in names)


def run_quickstarts(cluster: Cluster, namespace: str, tag: str, count: int, tmp_path: Path) -> dict[str, str]:
    """``count`` copies of the quickstart's Workflow, run to the local runner's outputs: name -> uid."""
    example = REPO / "examples/manifests/quickstart.yaml"
    docs = load_manifests(example, podCleanup="never")
    workflow = next(d for d in docs if d["kind"] == "Workflow")
    others = [d for d in docs if d["kind"] != "Workflow"]
    copies = []
    for i in range(count):
        copy = json.loads(json.dumps(workflow))
        copy["metadata"]["name"] = f"{workflow['metadata']['name']}-{tag}{i}"
        copies.append(copy)
    cluster.apply(others + copies, namespace)
    (tmp_path / tag).mkdir(exist_ok=True)
    expected = local_outputs(example, tmp_path / tag)
    uids = {}
    for copy in copies:
        wf = wait_finished(cluster, namespace, copy["metadata"]["name"], timeout=300)
        assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)
        assert wf["status"]["outputs"] == expected
        uids[copy["metadata"]["name"]] = wf["metadata"]["uid"]
    return uids


def creators(cluster: Cluster, namespace: str, release: str, uids: dict[str, str]) -> dict[str, set[str]]:
    """Per Workflow, the replicas (pod names) its step pods report to: the one that created them."""
    by_ip = {p["status"]["podIP"]: p["metadata"]["name"] for p in operator_pods(cluster, namespace, release)}
    step_pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
    out: dict[str, set[str]] = {name: set() for name in uids}
    for pod in step_pods:
        owner = next((o["name"] for o in pod["metadata"].get("ownerReferences", []) if o["kind"] == "Workflow"), None)
        if owner not in out:
            continue
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        ip = str(env.get("AGENTFLOW_CALLBACK_URL", "")).removeprefix("http://").rpartition(":")[0]
        out[owner].add(by_ip.get(ip, f"gone ({ip})"))
    return out


def check_quickstart(cluster: Cluster, namespace: str, release: str, tmp_path: Path) -> None:
    from agentflow.k8s.shards import owner

    pods = operator_pods(cluster, namespace, release)
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods), [
        (p["metadata"]["name"], p["status"]["phase"]) for p in pods]
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {OPERATOR_IMAGE}
    names = sorted(p["metadata"]["name"] for p in pods)
    try:
        cluster.wait_until("a Lease per replica", lambda: sorted(leases(cluster, namespace, release)) == names,
                           timeout=90)
        cluster.wait_until("both replicas acting", lambda: both_active(cluster, namespace, names), timeout=90)
    except AssertionError as exc:
        logs = {pod: pod_logs(cluster, namespace, pod)[-2000:] for pod in names}
        raise AssertionError(f"{exc}: {names} vs {sorted(leases(cluster, namespace, release))}; logs: {logs}"
                             ) from None
    assert all(lease["spec"]["leaseDurationSeconds"] == 10 for lease in leases(cluster, namespace, release).values())

    # Six runs: each is driven by the replica its uid hashes to, which created all its step pods.
    uids = run_quickstarts(cluster, namespace, "a", 6, tmp_path)
    made = creators(cluster, namespace, release, uids)
    for name, uid in uids.items():
        assert made[name] == {owner(uid, names)}, (name, made[name], owner(uid, names))
    acted = {owner(uid, names) for uid in uids.values()}
    for pod in names:  # a replica that owns none of them (1 in 32) drove nothing
        log = pod_logs(cluster, namespace, pod)
        assert ("POST /v1/attempt/result " in log) == (pod in acted), (pod, acted, log[-3000:])

    # One replica goes (a rollout, a node drained): it deletes its Lease as it stops, and the other takes every run
    # until the Deployment's new pod has waited its lease duration, then hands it its share (runs move mid-way, at
    # a reconcile's boundary); nothing is left behind or run twice.
    gone = names[0]
    cluster.kubectl("delete", "pod", gone, "-n", namespace, "--wait=true", "--timeout=120s", timeout=150)
    assert gone not in leases(cluster, namespace, release)
    uids_b = run_quickstarts(cluster, namespace, "b", 4, tmp_path)
    made_b = creators(cluster, namespace, release, uids_b)
    alive = {p["metadata"]["name"] for p in operator_pods(cluster, namespace, release)}
    assert all(made_b[name] and made_b[name] <= alive for name in uids_b), (made_b, alive)
    step_pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]
    nodes = [(p["metadata"]["labels"].get("agentflow.dev/run"), p["metadata"]["annotations"].get("agentflow.dev/node"))
             for p in step_pods]
    assert len(nodes) == len(set(nodes)) >= 3 * 10, f"a step started twice, or missing: {sorted(nodes)}"
