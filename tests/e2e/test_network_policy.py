"""NetworkPolicies are enforced on the local cluster: packets, not objects (plain pods and policies).

The local cluster's enforcer is kube-router's network policy controller (tests/e2e/cluster/up.sh).
Every "blocked" below comes with a control: an unselected pod in the same setup reaches the same
address at the same time, so a blocked result means the policy, not a dead server or a missing route.
Each scenario runs with runc and with the RuntimeClass gvisor (gVisor's netstack still sends its
packets through the pod's veth on the host, where the enforcer's iptables rules are).

Targets are the cluster's own: servers on this host at 10.88.0.1 (the host as pods see it) and at the
host's second bridge address (lib.sh HOST_SECOND_ADDRESS, standing in for a metadata server such as
169.254.169.254, which has no route from pods here and is never probed), the API server (directly and
through the ``kubernetes`` Service) and pods.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Cluster, cluster_setting, fresh_namespace
from .reachability import (
    HostServer,
    eventually_blocked,
    eventually_reaches,
    network_policy,
    pod_ip,
    probe,
    reaches,
    server_pod,
    server_pod_peers,
    sleeper_pod,
    wait_ready,
)

pytestmark = pytest.mark.e2e

RUNTIMES = ["runc", "gvisor"]
SERVER_PORT = 8080
SANDBOXED = {"agentflow-e2e/netpol": "sandboxed"}


@pytest.fixture(scope="module")
def local_cluster(cluster: Cluster) -> Cluster:
    """The local cluster, with its enforcer running (a cluster without one must fail here, not pass)."""
    if not cluster.local or not cluster.host_address:
        pytest.skip("needs the local cluster: servers on this host are targets, at addresses pods reach")
    pid_file = Path(cluster_setting("RUN_DIR")) / "pids" / "kube-router.pid"
    if not pid_file.exists() or not Path(f"/proc/{pid_file.read_text().strip()}").exists():
        pytest.fail(f"kube-router is not running ({pid_file}): NetworkPolicies are not enforced; "
                    "bring the cluster up with tests/e2e/cluster/up.sh (without --no-network-policy)")
    return cluster


def runtime_class(cluster: Cluster, runtime: str) -> str | None:
    if runtime == "runc":
        return None
    if cluster.kubectl("get", "runtimeclass", runtime, check=False).returncode != 0:
        pytest.fail(f"RuntimeClass {runtime} missing on the local cluster")
    return runtime


@dataclass
class EgressSetup:
    """A namespace with a pod under a default-deny egress policy that allows one host:port only."""

    namespace: str
    selected: str  # the pod the policy selects
    control: str  # same namespace, same runtime, not selected
    allowed: HostServer  # 10.88.0.1:port, the one allowed ipBlock + port (like a step pod's callback)
    other_port: HostServer  # 10.88.0.1, another port
    metadata_like: HostServer  # the host's second address
    other_namespace: str
    other_pod_ip: str  # a server pod in the other namespace
    selected_ip: str = ""


@pytest.fixture(scope="module", params=RUNTIMES)
def egress_setup(request: pytest.FixtureRequest, local_cluster: Cluster) -> Iterator[EgressSetup]:
    cluster = local_cluster
    runtime: str = request.param
    rc = runtime_class(cluster, runtime)
    host = cluster.host_address
    assert host
    second = cluster_setting("HOST_SECOND_ADDRESS")
    try:
        metadata_like = HostServer(second)
    except OSError as e:
        pytest.fail(f"cannot listen on {second} (HOST_SECOND_ADDRESS, put on the bridge by this checkout's "
                    f"up.sh; rerun it): {e}")
    with (metadata_like, HostServer(host) as allowed, HostServer(host) as other_port,
          fresh_namespace(cluster, f"np-egress-{runtime}-") as ns, fresh_namespace(cluster, "np-other-") as other):
        cluster.apply(server_pod("server", SERVER_PORT, runtime_class=rc), other)
        cluster.apply([sleeper_pod("selected", SANDBOXED, rc), sleeper_pod("control", None, rc)], ns)
        cluster.apply(network_policy("callback-only", SANDBOXED, egress=[
            {"to": [{"ipBlock": {"cidr": f"{host}/32"}}], "ports": [{"protocol": "TCP", "port": allowed.port}]},
        ]), ns)
        wait_ready(cluster, other, "server")
        wait_ready(cluster, ns, "selected", "control")
        setup = EgressSetup(ns, "selected", "control", allowed, other_port, metadata_like, other,
                            pod_ip(cluster, other, "server"))
        setup.selected_ip = pod_ip(cluster, ns, "selected")
        # The policy existed before the pods, but the enforcer programs a pod once it has an IP: wait for that
        # (bounded) on both sides, the port it denies closed and the one it allows open, then every check below
        # runs against the policy in force.
        eventually_blocked(cluster, ns, "selected", host, other_port.port)
        eventually_reaches(cluster, ns, "selected", host, allowed.port)
        # Connections made before the policy was in force are not what the tests look at.
        for server in (allowed, other_port, metadata_like):
            server.peers.clear()
        yield setup


def test_egress_allowlist_reaches_only_allowed_host_port(local_cluster: Cluster, egress_setup: EgressSetup) -> None:
    """(a) default-deny egress + one ipBlock:port: that host:port is reachable, another port on it is not."""
    c, s = local_cluster, egress_setup
    host = c.host_address
    assert host
    # The control pod reaches both servers: they are up and routable from this namespace.
    assert reaches(c, s.namespace, s.control, host, s.allowed.port)
    assert reaches(c, s.namespace, s.control, host, s.other_port.port)
    # The selected pod reaches exactly what its policy allows.
    # Allowed: within the enforcer's resync (kube-router rewrites a pod's chains on each sync, and a probe in that
    # window can time out on a loaded node); what is denied below is still checked with no such grace.
    eventually_reaches(c, s.namespace, s.selected, host, s.allowed.port, within=60)
    assert not probe(c, s.namespace, s.selected, host, s.other_port.port), "a port the policy does not allow"
    # And the servers saw it that way.
    assert s.selected_ip in s.allowed.peers
    assert s.selected_ip not in s.other_port.peers


def test_selected_pod_reaches_no_api_server_metadata_or_other_namespace(
    local_cluster: Cluster, egress_setup: EgressSetup
) -> None:
    """(b) the policy's pod reaches neither the API server (Service or host port), the metadata stand-in,
    nor a pod in another namespace; the unselected pod next to it reaches all of them."""
    c, s = local_cluster, egress_setup
    svc = c.get_json("service", "kubernetes", "-n", "default")["spec"]
    targets = {
        "API server via the kubernetes Service": (svc["clusterIP"], 443),
        "API server on the host": (c.host_address, int(cluster_setting("APISERVER_PORT"))),
        "metadata stand-in (host's second address)": (s.metadata_like.address, s.metadata_like.port),
        "pod in another namespace": (s.other_pod_ip, SERVER_PORT),
    }
    control_ip = pod_ip(c, s.namespace, s.control)
    other_before = server_pod_peers(c, s.other_namespace, "server")
    seen = {}
    for what, (ip, port) in targets.items():
        assert ip
        seen[what] = (probe(c, s.namespace, s.control, ip, port), probe(c, s.namespace, s.selected, ip, port))
    wrong = {what: f"control reached: {ctl}, selected reached: {sel}"
             for what, (ctl, sel) in seen.items() if not ctl or sel}
    assert not wrong, f"expected control=True, selected=False for every target; got {wrong}"
    assert s.selected_ip not in s.metadata_like.peers
    other_peers = server_pod_peers(c, s.other_namespace, "server")
    assert other_peers.count(s.selected_ip) == other_before.count(s.selected_ip) == 0
    assert other_peers.count(control_ip) == other_before.count(control_ip) + 1
    # Still allowed: the pod is not simply cut off.
    assert reaches(c, s.namespace, s.selected, c.host_address or "", s.allowed.port)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ingress_deny_makes_pod_unreachable_from_other_pods(local_cluster: Cluster, runtime: str) -> None:
    """(c)/(d) a pod under an ingress-deny policy is not reachable from another pod; an unselected server
    pod next to it is."""
    c = local_cluster
    rc = runtime_class(c, runtime)
    locked = {"agentflow-e2e/netpol": f"locked-{uuid.uuid4().hex[:4]}"}
    with fresh_namespace(c, f"np-ingress-{runtime}-") as ns:
        c.apply([server_pod("locked", SERVER_PORT, locked, rc), server_pod("open", SERVER_PORT, None, rc),
                 sleeper_pod("client", None, rc), network_policy("deny-ingress", locked, ingress=[])], ns)
        wait_ready(c, ns, "locked", "open", "client")
        locked_ip, open_ip, client_ip = (pod_ip(c, ns, p) for p in ("locked", "open", "client"))
        eventually_blocked(c, ns, "client", locked_ip, SERVER_PORT)
        # (Connections made before the policy was in force are in the log already: count from here.)
        before = server_pod_peers(c, ns, "locked").count(client_ip)
        assert reaches(c, ns, "client", open_ip, SERVER_PORT), "the control server is unreachable"
        assert not probe(c, ns, "client", locked_ip, SERVER_PORT)
        assert client_ip in server_pod_peers(c, ns, "open")
        assert server_pod_peers(c, ns, "locked").count(client_ip) == before
        # Deleting the policy opens the pod again: the block was the policy's.
        c.kubectl("delete", "-n", ns, "networkpolicy", "deny-ingress")
        c.wait_until("the locked pod to be reachable without its policy",
                     lambda: probe(c, ns, "client", locked_ip, SERVER_PORT), timeout=60)
        assert server_pod_peers(c, ns, "locked").count(client_ip) == before + 1
