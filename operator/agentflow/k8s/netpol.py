"""The NetworkPolicies of step pods: nothing in, out only to what they were granted. Pure: no I/O.

Two policies, both denying all ingress (NetworkPolicies add up: a pod selected by both may reach the union)::

    agentflow-step-baseline  one per namespace, created before its first isolated step pod and kept (owned by
                             nothing; it selects no pod once none runs): selects every step pod labelled
                             ``agentflow.dev/isolated=true`` and allows what every step needs, the platform's
                             endpoints below (:func:`build_baseline_policy`)
    POD NAME                 one per step pod that is granted egress of its own (a ToolPolicy's egress, an MCP
                             server's): selects exactly that pod (by its ``agentflow.dev/pod`` label), owned by
                             the Workflow and deleted with the pod; complete by itself (the platform's endpoints
                             and the grants), so a step keeps its grants if the baseline is missing
                             (:func:`build_network_policy`, :func:`needs_own_policy`)

A step with no grant of its own costs no API write for its policy: before issue 17 every step pod had one
created and deleted. The egress allowed is


- the operator's callback endpoint (an IP or CIDR and a TCP port; optionally also the operator pods by
  label, since CNIs differ in whether an ipBlock matches a Service's ClusterIP before or after DNAT;
  a callback given by name allows its port to any address),
- the model gateway, when there is one (``gateway``: an IP/CIDR becomes an ipBlock, a name goes to the
  annotation below like any granted name; ``gateway_pods`` also allows the gateway's pods by label on its
  port, which is what matches when step pods reach it through a Service: the ipBlock of a ClusterIP
  matches nothing on CNIs that check after kube-proxy's DNAT),
- the trace collector step pods export their spans to, when there is one (``collector``: an IP/CIDR becomes an
  ipBlock on its port, a name goes to the annotation below; ``collector_pods`` also allows the collector's pods
  by label on its port, for a collector reached through a Service, like the gateway),
- cluster DNS (kube-dns in kube-system, UDP and TCP 53), only when a name must be resolved (the callback,
  the gateway, the collector or a grant given by name) and ``dns`` is not False,
- the granted hosts that are IPs or CIDRs, as ipBlocks (with their port, or any port), each with the
  platform's denied networks inside it as ``except`` entries (agentflow.k8s.egress: metadata, the API
  server, the cluster's ranges; admission refuses such grants, this holds when it was bypassed).

Hostnames cannot be expressed in a NetworkPolicy (it matches addresses, and a name's addresses change), so
a grant by name gets no rule here: under an enforcing CNI such a host is unreachable from the step pod
(fail closed) unless the platform adds what can match names (Cilium's toFQDNs, an egress proxy). The
policy lists the names in the ``agentflow.dev/egress-hosts`` annotation (``host:port`` or ``host``,
comma-separated, sorted) for that and for a human reading the policy. Grant external APIs by address, or
call models through the gateway, which is allowed by address and label.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

from . import names
from .egress import EgressDenyList
from .podspec import Owner, owner_reference
from .profile import Egress, ExecutionProfile, is_ip_or_cidr

__all__ = ["NetworkConfig", "baseline_selector", "build_baseline_policy", "build_network_policy", "cidr_of", "dns_peer",
           "needs_own_policy",
           "parse_pod_selector"]


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The platform's side of every step pod's NetworkPolicy (operator flags, chart values)."""

    callback_pods: tuple[str, Mapping[str, str]] | None = None
    """(namespace, labels) of the operator pods serving the callback endpoint."""
    gateway_pods: tuple[str, Mapping[str, str]] | None = None
    """(namespace, labels) of the gateway pods."""
    collector: Egress | None = None
    """(host, port) of the trace collector step pods export their spans to."""
    collector_pods: tuple[str, Mapping[str, str]] | None = None
    """(namespace, labels) of the trace collector's pods."""
    deny: EgressDenyList = dataclasses.field(default_factory=EgressDenyList)


def parse_pod_selector(text: str, flag: str) -> tuple[str, dict[str, str]]:
    """``NAMESPACE:key=value,key=value`` -> (namespace, labels); ValueError naming ``flag``."""
    namespace, sep, labels = text.partition(":")
    pairs = [p.partition("=") for p in labels.split(",") if p.strip()]
    if not sep or not namespace.strip() or not pairs or any(not k.strip() or not s or not v.strip()
                                                            for k, s, v in pairs):
        raise ValueError(f"{flag} {text!r}: expected NAMESPACE:key=value[,key=value], e.g. "
                         "agentflow-system:app.kubernetes.io/component=gateway")
    return namespace.strip(), {k.strip(): v.strip() for k, _, v in pairs}


def dns_peer() -> dict[str, Any]:
    """Cluster DNS: the kube-dns pods (CoreDNS keeps that label) in kube-system."""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


def cidr_of(host: str) -> str:
    """An IP as a one-address CIDR (/32 or /128); a CIDR normalized. ValueError for anything else."""
    try:
        return str(ipaddress.ip_network(host, strict=False))
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address or CIDR") from None


def _tcp(port: int | None) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}] if port is not None else []


def _rule(peers: list[dict[str, Any]], port: int | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": peers}
    if port is not None:
        rule["ports"] = _tcp(port)
    return rule


def needs_own_policy(profile: ExecutionProfile, gateway: Egress | None) -> bool:
    """Whether a step pod with ``profile`` needs a NetworkPolicy of its own: it is granted egress beyond the
    platform's endpoints, which the namespace's baseline policy already allows."""
    return any(grant != gateway for grant in profile.egress)


def _egress(
    grants: tuple[Egress, ...],
    *,
    callback: tuple[str, int],
    dns: bool,
    callback_pods: tuple[str, Mapping[str, str]] | None,
    gateway: Egress | None,
    gateway_pods: tuple[str, Mapping[str, str]] | None,
    collector: Egress | None,
    collector_pods: tuple[str, Mapping[str, str]] | None,
    deny: EgressDenyList | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The egress rules of a step pod allowed the platform's endpoints and ``grants``, and the names among them
    (which no rule can match)."""
    deny = deny if deny is not None else EgressDenyList()
    host, port = callback
    if not is_ip_or_cidr(host):  # a name cannot be matched: the callback port, to any address
        callback_peers: list[dict[str, Any]] = []
    else:
        callback_peers = [{"ipBlock": {"cidr": cidr_of(host)}}]
    if callback_pods is not None:
        pods_ns, pod_labels = callback_pods
        callback_peers.append({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pods_ns}},
            "podSelector": {"matchLabels": dict(pod_labels)},
        })
    egress = [_rule(callback_peers, port) if callback_peers else {"ports": _tcp(port)}]
    if gateway_pods is not None and gateway is not None:
        pods_ns, pod_labels = gateway_pods
        egress.append(_rule([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pods_ns}},
                              "podSelector": {"matchLabels": dict(pod_labels)}}], gateway[1]))
    hostnames: list[str] = []
    if collector is not None:  # the platform's own endpoint, like the gateway: not checked against the deny-list
        collector_host, collector_port = collector
        peers: list[dict[str, Any]] = ([{"ipBlock": {"cidr": cidr_of(collector_host)}}]
                                       if is_ip_or_cidr(collector_host) else [])
        if collector_pods is not None:
            pods_ns, pod_labels = collector_pods
            peers.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pods_ns}},
                          "podSelector": {"matchLabels": dict(pod_labels)}})
        if peers:
            egress.append(_rule(peers, collector_port))
        if not is_ip_or_cidr(collector_host):
            hostnames.append(collector_host if collector_port is None else f"{collector_host}:{collector_port}")
    for grant_host, grant_port in dict.fromkeys(((gateway,) if gateway is not None else ()) + grants):
        if grant_host != (gateway or ("",))[0] and deny.blocks(grant_host, grant_port):
            continue  # a denied grant gets no rule at all (the reconciler fails such a step before this)
        if is_ip_or_cidr(grant_host):
            block: dict[str, Any] = {"cidr": cidr_of(grant_host)}
            excepted = deny.inside(block["cidr"], grant_port)
            if excepted:
                block["except"] = excepted
            egress.append(_rule([{"ipBlock": block}], grant_port))
        else:
            hostnames.append(grant_host if grant_port is None else f"{grant_host}:{grant_port}")
    if dns and (hostnames or not is_ip_or_cidr(host)):
        egress.insert(1, {
            "to": [dns_peer()],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        })
    return egress, hostnames


def _policy(metadata: dict[str, Any], selector: Mapping[str, str], egress: list[dict[str, Any]],
            hostnames: list[str]) -> dict[str, Any]:
    if hostnames:
        metadata["annotations"] = {names.EGRESS_HOSTS_ANNOTATION: ",".join(sorted(set(hostnames)))}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": dict(selector)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def build_network_policy(
    owner: Owner,
    namespace: str,
    pod_name: str,
    profile: ExecutionProfile,
    *,
    callback: tuple[str, int],
    dns: bool = True,
    callback_pods: tuple[str, Mapping[str, str]] | None = None,
    gateway: Egress | None = None,
    gateway_pods: tuple[str, Mapping[str, str]] | None = None,
    collector: Egress | None = None,
    collector_pods: tuple[str, Mapping[str, str]] | None = None,
    deny: EgressDenyList | None = None,
) -> dict[str, Any]:
    """A networking.k8s.io/v1 NetworkPolicy for the pod ``pod_name``, named like it and owned by ``owner``.

    ``callback`` is (IP or CIDR, port) of the operator's endpoint; ``callback_pods`` (namespace, labels) also
    allows the operator pods themselves on that port. ``gateway`` (host, port) is the model gateway and
    ``gateway_pods`` (namespace, labels) its pods; ``collector`` and ``collector_pods`` the same of the trace
    collector. ``deny``: the platform's egress deny-list (default: the
    built-in one).
    """
    egress, hostnames = _egress(profile.egress, callback=callback, dns=dns, callback_pods=callback_pods,
                                gateway=gateway, gateway_pods=gateway_pods, collector=collector,
                                collector_pods=collector_pods, deny=deny)
    metadata: dict[str, Any] = {
        "name": pod_name,
        "namespace": namespace,
        "labels": {
            names.WORKFLOW_LABEL: names.label_value(owner.name),
            names.RUN_LABEL: names.label_value(owner.uid),
            names.POD_LABEL: pod_name,
            names.MANAGED_BY_LABEL: names.MANAGED_BY,
            names.COMPONENT_LABEL: names.COMPONENT_STEP,
        },
        "ownerReferences": [owner_reference(owner)],
    }
    return _policy(metadata, {names.POD_LABEL: pod_name}, egress, hostnames)


def baseline_selector() -> dict[str, str]:
    """The labels the baseline policy selects: every isolated step pod of the namespace."""
    return {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.COMPONENT_LABEL: names.COMPONENT_STEP,
            names.ISOLATED_LABEL: "true"}


def build_baseline_policy(namespace: str, *, callback: tuple[str, int], dns: bool = True,
                          network: NetworkConfig | None = None, gateway: Egress | None = None) -> dict[str, Any]:
    """The namespace's baseline NetworkPolicy of step pods: ``agentflow-step-baseline``, selecting every step pod
    labelled ``agentflow.dev/isolated=true``, no ingress, egress to the platform's endpoints only (the callback,
    the gateway, the trace collector, DNS when one of them is a name). Owned by nothing: it is kept, selecting
    nothing once no step pod runs there. ``network`` gives the pods' labels and the deny-list."""
    net = network or NetworkConfig()
    egress, hostnames = _egress((), callback=callback, dns=dns, callback_pods=net.callback_pods, gateway=gateway,
                                gateway_pods=net.gateway_pods, collector=net.collector,
                                collector_pods=net.collector_pods, deny=net.deny)
    metadata: dict[str, Any] = {
        "name": names.BASELINE_POLICY,
        "namespace": namespace,
        "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.COMPONENT_LABEL: names.COMPONENT_STEP_BASELINE},
    }
    return _policy(metadata, baseline_selector(), egress, hostnames)
