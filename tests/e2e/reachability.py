"""Can this pod reach that address? Probes, servers and manifests for e2e tests about network reach.

Made for proving that NetworkPolicies are enforced (``test_network_policy.py``) and meant for any e2e
test that must show what a pod can and cannot connect to (the operator's step and tool pods, the
gateway):

* ``probe(cluster, namespace, pod, host, port) -> bool``: one TCP connect from inside a running pod
  (``kubectl exec`` of one perl process, which every Debian-based image has; the connect is bounded
  by ``timeout`` seconds). True: the connection was established. False: refused, unreachable or
  timed out, which is what a policy's REJECT or DROP looks like from inside the pod.
  ``connect_result`` says which (``"open"`` or the error, e.g. ``"Connection refused"``). If the
  probe itself cannot run (pod gone, exec refused, no perl in the image) it raises, so a broken probe
  never reads as "blocked".
* ``eventually_blocked(...)``: enforcers apply policies asynchronously (kube-router re-syncs on pod
  and policy events); poll a probe until the connection fails, or fail the test after ``within`` s.
* ``HostServer(address)``: a TCP server on this machine, on the host's address as pods see it
  (``10.88.0.1`` on the local cluster), that records the peer address of every connection
  (``.peers``): "blocked" can be checked on both ends.
* ``sleeper_pod`` (a pod to probe from) and ``server_pod`` (a pod serving TCP with perl, which
  ``debian:bookworm-slim`` has, logging ``peer <ip>`` per connection; ``server_pod_peers`` reads
  them) manifests; ``network_policy`` builds a NetworkPolicy; ``wait_ready`` and ``pod_ip``.

Targets are only ever the cluster's own addresses: pods, Services, and this host's addresses on the
pod bridge. Nothing here connects anywhere else.
"""

from __future__ import annotations

import ipaddress
import socketserver
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .conftest import Cluster

__all__ = [
    "TEST_IMAGE",
    "HostServer",
    "connect_result",
    "eventually_blocked",
    "network_policy",
    "pod_ip",
    "probe",
    "server_pod",
    "server_pod_peers",
    "sleeper_pod",
    "wait_ready",
]

TEST_IMAGE = "docker.io/library/debian:bookworm-slim"
"""Has perl-base (probes, servers); the local cluster imports it."""

_MARK = "probe-result="
# One process in the pod: perl's blocking connect under an alarm, printing "open" or the errno's text
# (IO::Socket's own Timeout reports "Operation already in progress" for a refused non-blocking connect).
_CONNECT = (
    "use IO::Socket::INET;"
    " my $r = eval { local $SIG{ALRM} = sub { die \"Connection timed out\\n\" }; alarm $ARGV[2];"
    "   my $s = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => $ARGV[1], Proto => 'tcp');"
    "   alarm 0; $s ? 'open' : \"$!\" };"
    " print '" + _MARK + "', (defined $r ? $r : $@ =~ s/\\n//r), \"\\n\";"
)


def connect_result(cluster: Cluster, namespace: str, pod: str, host: str, port: int,
                   timeout: int = 5) -> str:
    """``"open"`` if a TCP connection from ``pod`` to ``host:port`` is established within ``timeout`` s,
    else why not (``"Connection refused"``, ``"Connection timed out"``, ``"Network is unreachable"``...)."""
    ipaddress.ip_address(host)  # an address, never a name (there is no DNS on the local cluster)
    proc = cluster.kubectl("exec", "-n", namespace, pod, "--", "perl", "-e", _CONNECT, host, str(int(port)),
                           str(int(timeout)), check=False, timeout=timeout + 60)
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return line.removeprefix(_MARK).strip()
    raise AssertionError(
        f"probe from {namespace}/{pod} to {host}:{port} did not run (exit {proc.returncode}):\n"
        f"{proc.stderr}{proc.stdout}"
    )


def probe(cluster: Cluster, namespace: str, pod: str, host: str, port: int, timeout: int = 5) -> bool:
    """Whether a TCP connection from ``pod`` to ``host:port`` is established within ``timeout`` s."""
    return connect_result(cluster, namespace, pod, host, port, timeout) == "open"


def reaches(cluster: Cluster, namespace: str, pod: str, host: str, port: int, tries: int = 3) -> bool:
    """Whether ``pod`` connects to ``host:port`` in one of ``tries`` attempts: a connection that should open
    may time out once on a loaded machine (a pod in gVisor, exec through the API server); one that is
    blocked never opens, so retrying does not hide a block."""
    return any(probe(cluster, namespace, pod, host, port) for _ in range(tries))


def eventually_reaches(cluster: Cluster, namespace: str, pod: str, host: str, port: int,
                       within: float = 90) -> float:
    """Poll until ``pod`` connects to ``host:port``; the seconds that took. For a path a NetworkPolicy allows
    while the enforcer is still programming it (a new pod's rules and ipsets are written in more than one sync
    on a loaded node); a path that stays blocked fails after ``within`` seconds."""
    start = time.monotonic()
    while not probe(cluster, namespace, pod, host, port):
        if time.monotonic() - start > within:
            raise AssertionError(f"{namespace}/{pod} does not reach {host}:{port} {within:g} s after its "
                                 "NetworkPolicy allowed it")
        time.sleep(1)
    return time.monotonic() - start


def eventually_blocked(cluster: Cluster, namespace: str, pod: str, host: str, port: int,
                       within: float = 60) -> float:
    """Poll until ``pod`` can no longer connect to ``host:port``; the seconds that took."""
    start = time.monotonic()
    while probe(cluster, namespace, pod, host, port):
        if time.monotonic() - start > within:
            raise AssertionError(
                f"{namespace}/{pod} still reaches {host}:{port} {within:g} s after its NetworkPolicy was "
                "applied: is a NetworkPolicy enforcer running? (the local cluster's is kube-router, "
                "started by tests/e2e/cluster/up.sh unless --no-network-policy)"
            )
        time.sleep(1)
    return time.monotonic() - start


class HostServer:
    """A TCP server on this machine at ``address`` (port chosen by the kernel unless given).

    Every connection is answered with one line and closed; ``peers`` holds the address of every
    client that connected. A context manager; ``close()`` stops it.
    """

    def __init__(self, address: str, port: int = 0) -> None:
        peers: list[str] = []
        self.peers = peers

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                peers.append(self.client_address[0])
                self.request.sendall(b"hello-from-host\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((address, port), Handler)
        self.address: str = address
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pod(name: str, command: list[str], labels: dict[str, str] | None,
         runtime_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "containers": [{"name": "main", "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent",
                        "command": command}],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": spec}


def sleeper_pod(name: str, labels: dict[str, str] | None = None,
                runtime_class: str | None = None) -> dict[str, Any]:
    """A pod that only sleeps: the client side of ``probe``."""
    return _pod(name, ["sleep", "infinity"], labels, runtime_class)


_SERVE = (
    "use IO::Socket::INET; $| = 1;"
    " my $s = IO::Socket::INET->new(LocalPort => {port}, Listen => 64, ReuseAddr => 1, Proto => 'tcp')"
    "   or die \"listen: $!\";"
    " print \"listening on {port}\\n\";"
    " while (1) {{ my $c = $s->accept or next; print 'peer ', $c->peerhost, \"\\n\";"
    " print $c \"hello-from-pod\\n\"; close $c; }}"
)


def server_pod(name: str, port: int, labels: dict[str, str] | None = None,
               runtime_class: str | None = None) -> dict[str, Any]:
    """A pod serving TCP on ``port``, Ready once listening, logging ``peer <ip>`` for each connection.

    Readiness is one startup probe (the kubelet connects once from the host, which enforcers let
    through: kube-router accepts traffic from the pod's own node), so the pod becomes Ready under an
    ingress deny too and its log is not filled with probes.
    """
    pod = _pod(name, ["perl", "-e", _SERVE.format(port=int(port))], labels, runtime_class)
    container = pod["spec"]["containers"][0]
    container["ports"] = [{"containerPort": int(port), "protocol": "TCP"}]
    container["startupProbe"] = {"tcpSocket": {"port": int(port)}, "periodSeconds": 1, "failureThreshold": 120}
    return pod


def server_pod_peers(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    """The client addresses a ``server_pod`` has seen, from its log."""
    logs = cluster.kubectl("logs", "-n", namespace, pod).stdout
    return [line.split()[1] for line in logs.splitlines() if line.startswith("peer ")]


def network_policy(name: str, pod_labels: dict[str, str], *, ingress: list[dict[str, Any]] | None = None,
                   egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A NetworkPolicy for the pods with ``pod_labels``; a direction given (even as ``[]``: deny all)
    is in ``policyTypes``, one left as None is not restricted."""
    spec: dict[str, Any] = {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": spec}


def wait_ready(cluster: Cluster, namespace: str, *pods: str, timeout: float = 180) -> None:
    """Wait until every pod is Ready; on failure, the pods' descriptions are in the error."""
    names = [f"pod/{p}" for p in pods]
    proc = cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", *names, f"--timeout={timeout:g}s",
                           check=False, timeout=timeout + 30)
    if proc.returncode != 0:
        desc = cluster.kubectl("describe", "-n", namespace, *names, check=False).stdout
        raise AssertionError(f"pods {pods} in {namespace} not Ready: {proc.stderr}\n{desc}")


def pod_ip(cluster: Cluster, namespace: str, pod: str) -> str:
    ip: str = cluster.get_json("pod", pod, "-n", namespace)["status"]["podIP"]
    return ip
