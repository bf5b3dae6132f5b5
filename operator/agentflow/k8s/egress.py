"""Where no step may ever reach, whatever a ToolPolicy grants: the platform's egress deny-list. Pure.

A ToolPolicy is written by whoever can create objects in a namespace; the platform is not. The deny-list
holds the addresses a tenant's tool must never reach: cloud metadata services (every link-local address,
169.254.0.0/16 and fe80::/10, plus the other clouds' metadata addresses), the Kubernetes API server (its
Service address, found in the operator's environment, and its endpoints when the platform names them), and
the cluster's own pod and service ranges when the platform gives them (``agentflow operator --egress-deny
CIDR|IP:PORT``, the chart's ``egress.deny``). An entry with a port denies that port only (the API server's
``10.0.0.1:6443`` on a node that also serves a tool on another port); a grant of such a host without a port
is refused too, since it would include the denied port. It is applied twice:

    admission      a grant (an http tool's url or allowedHosts, an mcp tool's url, permissions.egressHosts) that
                   is, contains or overlaps a denied network is refused, naming the field (agentflow.services.platform)
    NetworkPolicy  an ipBlock granted anyway (the webhook was down, the policy predates the deny-list) gets
                   the denied networks inside it as ``except`` entries (agentflow.k8s.netpol)

Hostnames cannot be checked here (they resolve to changing addresses); names a tenant could use to reach
the platform (localhost, the API server's names, metadata names) are refused by name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Iterable

__all__ = ["DEFAULT_DENY", "DENIED_NAMES", "EgressDenyList"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENY: tuple[str, ...] = (
    "169.254.0.0/16",  # link-local: AWS/GCP/Azure/OpenStack metadata 169.254.169.254, ECS 169.254.170.2
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "127.0.0.0/8",  # the step pod itself / its node through hostNetwork services
    "::1/128",
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host
    "::/128",  # the unspecified IPv6 address, which reaches the local host too
)
"""Denied on every cluster; the platform adds its API server, pod and service ranges."""

DENIED_NAMES: tuple[str, ...] = (
    "localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "kubernetes", "kubernetes.default", "kubernetes.default.svc",
)
"""Names refused as egress grants (and anything ending in ``.localhost`` or ``.svc.cluster.local`` of the
API server)."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}", re.IGNORECASE)


def _network(text: str) -> Network:
    """The network ``text`` names: an IP or CIDR, also in the forms resolvers accept for IPv4 (``2130706433``,
    ``0x7f.1``, ``127.1``, ``0177.0.0.1``) and IPv4 inside IPv6 (``::ffff:169.254.169.254``), which reach the
    IPv4 address. ValueError for a name."""
    text = text.strip().strip("[]")
    if _NUMERIC_HOST.fullmatch(text):
        try:
            return ipaddress.ip_network(socket.inet_ntoa(socket.inet_aton(text)))  # inet_aton: as resolvers read it
        except OSError:
            raise ValueError(text) from None
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        value = int(network.network_address)
        low = ipaddress.IPv4Address(value & 0xFFFFFFFF)
        embedded = network.network_address.ipv4_mapped or (
            low if (value >> 32 == 0 and value > 1) or network.network_address in _NAT64 else None)
        if embedded is not None:
            return ipaddress.ip_network(f"{embedded}/{network.prefixlen - 96}", strict=False)
    return network


def _entry(text: str) -> tuple[Network, int | None]:
    """``CIDR``, ``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` -> (network, port or None); ValueError otherwise."""
    text = text.strip()
    if text.startswith("[") and "]:" in text:
        host, _, port = text[1:].partition("]:")
        return _network(host), int(port)
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host and "/" not in port:
        return _network(host), int(port)
    return _network(text), None


@dataclasses.dataclass(frozen=True)
class EgressDenyList:
    entries: tuple[tuple[Network, int | None], ...] = tuple((_network(c), None) for c in DEFAULT_DENY)

    @classmethod
    def with_extra(cls, entries: Iterable[str]) -> EgressDenyList:
        """The defaults plus ``entries`` (CIDR, IP or IP:PORT); ValueError naming a bad one."""
        extra = []
        for entry in entries:
            if not entry.strip():
                continue
            try:
                extra.append(_entry(entry))
            except ValueError:
                raise ValueError(f"--egress-deny {entry!r} is not an IP address, CIDR or IP:PORT") from None
        return cls(tuple(dict.fromkeys((*cls().entries, *extra))))

    @property
    def networks(self) -> tuple[Network, ...]:
        return tuple(n for n, _ in self.entries)

    def problem(self, host: str, port: int | None = None) -> str | None:
        """Why ``host`` (a name, an IP or a CIDR) may not be granted on ``port`` (None: any port); None: it may."""
        name = host.strip().strip("[]").lower().rstrip(".")
        if name in DENIED_NAMES or name.endswith(".localhost") or name.startswith("kubernetes.default."):
            return f"{host!r} names the platform itself (the API server, metadata or this node): never granted"
        try:
            network = _network(name)
        except ValueError:
            return None
        for denied, denied_port in self.entries:
            if network.version != denied.version or not network.overlaps(denied):
                continue
            if denied_port is not None and port is not None and port != denied_port:
                continue
            what = f"{denied}" + (f" port {denied_port}" if denied_port is not None else "")
            hint = ("; grant the exact port the tool needs" if denied_port is not None and port is None
                    else "; grant the exact external addresses the tool needs")
            return (f"{host!r}" + (f" port {port}" if port is not None else " (any port)") + f" overlaps {what}, "
                    "which the platform denies to every step (metadata, the API server, the cluster's own ranges)"
                    + hint)
        return None

    def blocks(self, host: str, port: int | None = None) -> bool:
        """Whether a NetworkPolicy rule for ``host`` on ``port`` must be left out altogether: it names the
        platform, or lies wholly inside a denied network (a grant that merely contains one keeps its rule, with
        :meth:`inside` as its ``except`` entries)."""
        name = host.strip().strip("[]").lower().rstrip(".")
        if name in DENIED_NAMES or name.endswith(".localhost") or name.startswith("kubernetes.default."):
            return True
        try:
            network = _network(name)
        except ValueError:
            return False
        return any(network.version == denied.version and network.subnet_of(denied)  # type: ignore[arg-type]
                   and (denied_port is None or port is None or port == denied_port)
                   for denied, denied_port in self.entries)

    def inside(self, cidr: str, port: int | None = None) -> list[str]:
        """The denied networks inside granted ``cidr`` (on ``port``; None: any): the ``except`` entries of its
        ipBlock. An ``IP:PORT`` entry is excepted whole when the grant includes its port (an ipBlock cannot
        except one port)."""
        network = _network(cidr)
        return list(dict.fromkeys(
            str(d) for d, denied_port in self.entries
            if d.version == network.version and d != network and d.subnet_of(network)  # type: ignore[arg-type]
            and (denied_port is None or port is None or port == denied_port)))
