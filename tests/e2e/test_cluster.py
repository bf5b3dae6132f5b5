"""The e2e cluster itself: node, runtimes (runc and gVisor), garbage collection, admission webhooks.

Runs against the local cluster of tests/e2e/cluster/ or any cluster named by $KUBECONFIG.
Test pods use ``debian:bookworm-slim`` with imagePullPolicy IfNotPresent: the local cluster has it
imported (built from a debootstrapped rootfs); other clusters can pull it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import ipaddress
import json
import os
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import CLUSTER_DIR, cluster_setting

if TYPE_CHECKING:
    from .conftest import Cluster

pytestmark = pytest.mark.e2e

TEST_IMAGE = "docker.io/library/debian:bookworm-slim"


def pod(name: str, command: str, runtime_class: str | None = None, **meta: object) -> dict:
    spec: dict = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "main",
                "image": TEST_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", command],
            }
        ],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": spec}


def wait_pod_finished(cluster: Cluster, ns: str, name: str, timeout: float = 180) -> str:
    phase = {"v": ""}

    def done() -> bool:
        p = cluster.get_json("pod", name, "-n", ns)
        phase["v"] = p.get("status", {}).get("phase", "")
        return phase["v"] in ("Succeeded", "Failed")

    try:
        cluster.wait_until(f"pod {ns}/{name} to finish", done, timeout=timeout)
    except AssertionError:
        desc = cluster.kubectl("describe", "pod", name, "-n", ns, check=False).stdout
        raise AssertionError(f"pod {ns}/{name} did not finish (phase {phase['v']!r}):\n{desc}") from None
    return phase["v"]


def test_node_ready(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes")["items"]
    real = [n for n in nodes if n["metadata"].get("labels", {}).get("type") != "kwok"]
    assert real, "no (non-simulated) node"
    ready = {
        n["metadata"]["name"]
        for n in real
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    }
    assert ready, f"no node Ready among {[n['metadata']['name'] for n in real]}"
    if cluster.local:
        assert cluster.node_name in ready
        out = cluster.kubectl("get", "nodes").stdout
        assert cluster.node_name in out and " Ready " in out


def test_default_runtime_pod_succeeds(cluster: Cluster, namespace: str) -> None:
    cluster.apply(pod("runc", "echo hello-from-default-runtime; uname -r"), namespace)
    assert wait_pod_finished(cluster, namespace, "runc") == "Succeeded"
    logs = cluster.kubectl("logs", "runc", "-n", namespace).stdout
    assert "hello-from-default-runtime" in logs
    kernel = logs.splitlines()[-1].strip()
    assert kernel != "4.4.0" and "gvisor" not in kernel  # the host's kernel, not gVisor's


def test_gvisor_pod_runs_under_gvisor(cluster: Cluster, namespace: str) -> None:
    rc = cluster.kubectl("get", "runtimeclass", "gvisor", "-o", "json", check=False)
    if rc.returncode != 0:
        if cluster.local:
            pytest.fail(f"RuntimeClass gvisor missing on the local cluster: {rc.stderr}")
        pytest.skip("this cluster has no RuntimeClass gvisor")
    assert json.loads(rc.stdout)["handler"] == "runsc"
    cluster.apply(
        pod("gvisor", "echo kernel=$(uname -r); dmesg 2>&1 | head -n 3", runtime_class="gvisor"),
        namespace,
    )
    phase = wait_pod_finished(cluster, namespace, "gvisor")
    logs = cluster.kubectl("logs", "gvisor", "-n", namespace, check=False).stdout
    assert phase == "Succeeded", logs
    # gVisor's own kernel: its dmesg banner, and the Linux version it reports (4.4.0 in older
    # releases, "4.19.0-gvisor" in recent ones), not the host's.
    assert "Starting gVisor" in logs, logs
    kernel = next(line for line in logs.splitlines() if line.startswith("kernel=")).removeprefix("kernel=")
    assert kernel == "4.4.0" or "gvisor" in kernel, logs


def test_deleting_owner_garbage_collects_pods(cluster: Cluster, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace)
    uid = cluster.get_json("configmap", "owner", "-n", namespace)["metadata"]["uid"]
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    for i in range(2):
        cluster.apply(pod(f"owned-{i}", "sleep 3600", ownerReferences=[owner_ref]), namespace)
    assert len(cluster.get_json("pods", "-n", namespace)["items"]) == 2
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    cluster.wait_until(
        "owned pods to be garbage-collected",
        lambda: not cluster.get_json("pods", "-n", namespace)["items"],
        timeout=120,
    )


# ------------------------------------------------------------------ admission webhook on the host


def _make_tls(tmp: Path) -> tuple[Path, Path, bytes]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (cert file, key file, CA PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentflow-e2e-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentflow-e2e-webhook")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "tls.crt", tmp / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


DENY_MESSAGE = "agentflow-e2e webhook says no to verdict=deny"


class _Webhook(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        obj = req.get("object") or {}
        name = obj.get("metadata", {}).get("name", "")
        type(self).seen.append(name)
        allowed = (obj.get("data") or {}).get("verdict") != "deny"
        response: dict = {"uid": req["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 403, "message": DENY_MESSAGE}
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def host_webhook(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    """A TLS admission webhook server on 127.0.0.1 (this host): (port, CA PEM)."""
    cert, key, ca_pem = _make_tls(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    _Webhook.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], ca_pem
    finally:
        server.shutdown()
        server.server_close()


def test_admission_webhook_on_host_decides(
    cluster: Cluster, namespace: str, host_webhook: tuple[int, bytes]
) -> None:
    if not cluster.local:
        pytest.skip("the API server must run on this host to call a webhook on 127.0.0.1")
    port, ca_pem = host_webhook
    name = f"{namespace}.agentflow-e2e.test"
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": namespace},
            "webhooks": [
                {
                    "name": name,
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/validate",
                        "caBundle": base64.b64encode(ca_pem).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 10,
                }
            ],
        }
    )
    try:
        # The API server picks new webhook configurations up asynchronously: probe until called.
        probes = iter(range(1000))

        def webhook_called() -> bool:
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"probe-{next(probes)}"}}
            cluster.apply(cm, namespace)
            return bool(_Webhook.seen)

        cluster.wait_until("the webhook to be called", webhook_called, timeout=60, every=0.5)

        allowed = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "allowed"},
                   "data": {"verdict": "allow"}}
        cluster.apply(allowed, namespace)
        assert "allowed" in _Webhook.seen
        assert cluster.get_json("configmap", "allowed", "-n", namespace)["data"]["verdict"] == "allow"

        denied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "denied"},
                  "data": {"verdict": "deny"}}
        proc = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(denied), check=False)
        assert proc.returncode != 0
        assert DENY_MESSAGE in proc.stderr, proc.stderr
        assert f'admission webhook "{name}" denied the request' in proc.stderr, proc.stderr
        assert "denied" in _Webhook.seen
        gone = cluster.kubectl("get", "configmap", "denied", "-n", namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", namespace, check=False)


def test_pod_reaches_server_on_host(cluster: Cluster, namespace: str) -> None:
    """Step pods call back to the operator on the host: a pod reaches a TCP server here."""
    if not cluster.local or not cluster.host_address:
        pytest.skip("needs the address of this host as seen from pods (AGENTFLOW_E2E_HOST_ADDRESS)")
    import socket

    srv = socket.socket()
    srv.bind((cluster.host_address, 0))
    srv.listen()
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def accept() -> None:
        srv.settimeout(150)
        try:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"hello-from-host\n")
                got.append(b"ok")
        except OSError:
            pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        # bash's /dev/tcp: no extra tools needed in the image.
        cmd = f"exec 3<>/dev/tcp/{cluster.host_address}/{port}; head -n1 <&3"
        p = pod("callback", "")
        p["spec"]["containers"][0]["command"] = ["bash", "-c", cmd]
        cluster.apply(p, namespace)
        phase = wait_pod_finished(cluster, namespace, "callback")
        logs = cluster.kubectl("logs", "callback", "-n", namespace, check=False).stdout
        assert phase == "Succeeded", logs
        assert "hello-from-host" in logs
        assert got
    finally:
        srv.close()


@contextlib.contextmanager
def simulated_node(cluster: Cluster, name: str) -> Iterator[str]:
    """A kwok-simulated node for the time of a test: a kwok controller of its own (built by
    tests/e2e/cluster/build.sh kwok, which `make tools` runs), managing only the nodes annotated for it, so it
    works beside up.sh --mode kwok's controller and on any cluster $KUBECONFIG names. Yields the node's name."""
    subprocess.run(["bash", str(CLUSTER_DIR / "build.sh"), "kwok"], check=True, timeout=1800,
                   capture_output=True, text=True)
    binary = Path(cluster_setting("KWOK_BIN")) / "kwok"
    selector = f"agentflow.dev/e2e-kwok={name}"
    log = tempfile.NamedTemporaryFile(prefix="kwok-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [str(binary), "--kubeconfig", cluster.kubeconfig, "--manage-all-nodes=false",
         f"--manage-nodes-with-annotation-selector={selector}", "--cidr=10.90.0.0/16", "--node-ip=10.90.0.1"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        cluster.apply({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "annotations": {"agentflow.dev/e2e-kwok": name, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}},
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                       "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}, None)

        def ready() -> bool:
            assert proc.poll() is None, Path(log.name).read_text()[-2000:]
            node = cluster.get_json("node", name)
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (node.get("status") or {}).get("conditions") or [])

        cluster.wait_until(f"the kwok node {name} to be Ready", ready, timeout=120)
        yield name
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        os.unlink(log.name)


def test_kwok_nodes_run_simulated_pods(cluster: Cluster, namespace: str) -> None:
    """Simulated nodes (what the scale benches run on, up.sh --mode kwok): pods that tolerate them 'run' there.
    The cluster's own kwok nodes when it has them, else one made here."""
    kwok_nodes = cluster.get_json("nodes", "-l", "type=kwok")["items"]
    with contextlib.ExitStack() as stack:
        if kwok_nodes:
            selector = {"type": "kwok"}
        else:
            made = stack.enter_context(simulated_node(cluster, f"kwok-{namespace}"[:63]))
            selector = {"kubernetes.io/hostname": made}
        p = pod("simulated", "true")
        p["spec"]["nodeSelector"] = selector
        p["spec"]["tolerations"] = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
        cluster.apply(p, namespace)
        cluster.wait_until(
            "the simulated pod to be Running on a kwok node",
            lambda: cluster.get_json("pod", "simulated", "-n", namespace).get("status", {}).get("phase") == "Running",
            timeout=60,
        )
        node = cluster.get_json("pod", "simulated", "-n", namespace)["spec"]["nodeName"]
        assert node.startswith("kwok-")
        cluster.kubectl("delete", "pod", "simulated", "-n", namespace, "--grace-period=0", "--force", check=False)


def test_pod_reaches_api_server_through_kubernetes_service(cluster: Cluster, namespace: str) -> None:
    """In-cluster clients (the operator installed by its Helm chart) use the `kubernetes` Service."""
    svc = cluster.get_json("service", "kubernetes", "-n", "default")
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
    p = pod("apiclient", "")
    p["spec"]["containers"][0]["command"] = [
        "bash", "-c", f"timeout 20 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' && echo connected-to-api",
    ]
    cluster.apply(p, namespace)
    phase = wait_pod_finished(cluster, namespace, "apiclient")
    logs = cluster.kubectl("logs", "apiclient", "-n", namespace, check=False).stdout
    assert phase == "Succeeded" and "connected-to-api" in logs, logs
