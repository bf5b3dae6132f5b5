"""Fixtures for end-to-end tests against a real Kubernetes cluster.

Which cluster:
  * ``$KUBECONFIG`` set: that cluster, whatever it is (kind, k3d, a cloud cluster). Nothing is
    started or stopped.
  * else the project's local cluster (tests/e2e/cluster/up.sh) if it is already running: reused,
    left running.
  * else the local cluster is brought up here and torn down (down.sh) when the session ends.

kubectl: ``$KUBECTL``, else the one built by tests/e2e/cluster/build.sh, else the one on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CLUSTER_DIR = Path(__file__).resolve().parent / "cluster"
SESSION_PREFIX = f"e2e-{uuid.uuid4().hex[:6]}-"
"""Prefix of every namespace this test session creates."""


def cluster_setting(name: str) -> str:
    """A variable of tests/e2e/cluster/lib.sh, as the scripts see it (same environment)."""
    out = subprocess.run(
        ["bash", "-c", f'source "{CLUSTER_DIR}/lib.sh" >/dev/null && printf %s "${name}"'],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


RETRYABLE_VERBS = frozenset({"get", "apply", "wait", "describe", "logs", "api-resources", "version"})
TRANSIENT = ("Unable to connect to the server", "TLS handshake timeout", "connection refused",
             "i/o timeout", "http2: client connection lost", "etcdserver: request timed out",
             "the server was unable to return a response in the time allotted",
             "the server is currently unable to handle the request", "net/http: request canceled")


def transient_failure(args: tuple[str, ...], stderr: str) -> bool:
    """A failure of the connection or of the API server's storage, on a verb safe to repeat."""
    verb = next((a for a in args if not a.startswith("-")), "")
    return verb in RETRYABLE_VERBS and any(t in stderr for t in TRANSIENT)


@dataclass
class Cluster:
    kubeconfig: str
    kubectl_path: str
    local: bool  # the project's own cluster on this machine (its API server runs here)
    started_here: bool
    node_name: str | None  # the local cluster's real node
    host_address: str | None  # address on this machine that pods can reach

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl. A request that never reached the API server, or that it could not answer in time (a
        loaded node: TLS handshake timeouts, a refused connection while it restarts, etcd timeouts), is tried
        again up to three times when the verb is one that repeating cannot change the outcome of (get, apply,
        wait, ...); anything else is reported as it is."""
        for attempt in range(4):
            proc = subprocess.run(
                [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode == 0 or attempt == 3 or not transient_failure(args, proc.stderr):
                break
            time.sleep(2 * (attempt + 1))
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def apply(self, manifest: dict | list, namespace: str | None = None) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        body = "\n---\n".join(json.dumps(d) for d in docs)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        self.kubectl(*args, input=body)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_until(self, what: str, pred: Callable[[], bool], timeout: float = 120, every: float = 1) -> None:
        end = time.monotonic() + timeout
        while True:
            if pred():
                return
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(every)

    def ready(self) -> bool:
        try:
            return self.kubectl("get", "--raw", "/readyz", check=False, timeout=15).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def _kubectl_path() -> str:
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    built = Path(cluster_setting("K8S_BIN")) / "kubectl"
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    if found:
        return found
    # The local cluster's bring-up builds it.
    return str(built)


def _script(name: str, *args: str, timeout: float) -> None:
    subprocess.run(["bash", str(CLUSTER_DIR / name), *args], check=True, timeout=timeout)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    local_kc = str(Path(cluster_setting("RUN_DIR")) / "kubeconfig")
    env_kc = os.environ.get("KUBECONFIG")
    if env_kc and Path(env_kc).resolve() != Path(local_kc).resolve():
        c = Cluster(env_kc, _kubectl_path(), False, False, None, os.environ.get("AGENTFLOW_E2E_HOST_ADDRESS"))
        if not c.ready():
            pytest.fail(f"KUBECONFIG={env_kc}: the cluster's API server is not ready")
        yield c
        return
    c = Cluster(
        local_kc,
        _kubectl_path(),
        True,
        False,
        cluster_setting("NODE_NAME"),
        cluster_setting("POD_GATEWAY"),
    )
    if not (Path(local_kc).exists() and c.ready()):
        _script("up.sh", timeout=60 * 60)
        c.started_here = True
        c.kubectl_path = _kubectl_path()
    assert c.ready(), "local cluster did not become ready"
    os.environ.setdefault("KUBECONFIG", local_kc)
    try:
        yield c
    finally:
        if c.started_here:
            _script("down.sh", timeout=300)


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> str:
    """Path of the kubeconfig of the cluster under test."""
    return cluster.kubeconfig


@contextlib.contextmanager
def fresh_namespace(cluster: Cluster, prefix: str = "") -> Iterator[str]:
    """A new namespace named ``SESSION_PREFIX + prefix + random``, deleted afterwards (without waiting).

    Operators a test session starts watch namespaces by such prefixes, so two sessions (or two
    operators of one session) sharing a cluster never drive each other's runs.
    """
    name = f"{SESSION_PREFIX}{prefix}{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    # Pods can only be created once the namespace's default ServiceAccount exists.
    cluster.wait_until(
        "default service account",
        lambda: cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        timeout=60,
        every=0.5,
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test (see fresh_namespace)."""
    with fresh_namespace(cluster) as name:
        yield name


# --------------------------------------------------------------------------- the session's operator
# Defined here, once: a fixture imported into several test modules is a fixture of each of them, and a
# session-scoped one then runs once per module, so several operators would drive the same namespaces at once.

OPERATOR_PREFIX = "op-"
"""The namespaces of the session's operator (``operator``, ``op_namespace``)."""
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def step_images(cluster: Cluster) -> None:
    if cluster.local:
        subprocess.run(["bash", str(REPO / "tests/e2e/cluster/images.sh"), "--only", "project"], check=True,
                       timeout=3600)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("workflows", "agents", "promptversions", "budgets", "toolpolicies", "workflowtemplates",
                "workflowschedules", "workflowtriggers", "promptrollouts", "clusterworkflowtemplates"):
        # polled, not `kubectl wait`: that fails at once on a CRD whose status has no conditions yet
        def established(crd: str = crd) -> bool:
            obj = cluster.get_json(f"crd/{crd}.agentflow.dev")
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in (obj.get("status") or {}).get("conditions") or [])

        cluster.wait_until(f"CRD {crd}.agentflow.dev to be Established", established, timeout=60)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's operator (test_operator.Operator), watching the ``op-`` namespaces; modules that stop and
    start it (the kill tests, retention) stop the only one."""
    from .test_operator import Operator

    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by "
                    "KUBECONFIG")
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("operator") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{OPERATOR_PREFIX}*"])
    op.start()
    yield op
    op.stop()


@pytest.fixture
def op_namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace the session's operator watches."""
    with fresh_namespace(cluster, OPERATOR_PREFIX) as name:
        yield name
