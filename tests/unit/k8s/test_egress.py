"""The platform's egress deny-list: what no ToolPolicy may grant, in every spelling that reaches it."""

from __future__ import annotations

import pytest

from agentflow.k8s.egress import EgressDenyList

PLATFORM = EgressDenyList.with_extra(["10.96.0.0/12", "10.244.0.0/16", "192.168.49.2:8443"])


@pytest.mark.parametrize("host", [
    # cloud metadata, every way of writing it
    "169.254.169.254", "169.254.170.2", "[fd00:ec2::254]", "fd00:ec2::254", "100.100.100.200",
    "metadata.google.internal", "metadata", "METADATA.GOOGLE.INTERNAL.", "instance-data",
    "::ffff:169.254.169.254", "[::ffff:a9fe:a9fe]", "::169.254.169.254", "64:ff9b::a9fe:a9fe",
    "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
    # the local host
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0", "0.0.0.0", "::1", "[::1]", "::",
    "localhost", "LOCALHOST", "api.localhost",
    # the API server and the cluster's own ranges
    "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
    "10.96.0.1", "10.100.0.0/16", "10.244.3.7", "10.0.0.0/8", "0.0.0.0/0", "::/0",
    "fe80::1", "169.254.0.0/16",
])
def test_denied_in_every_spelling(host: str) -> None:
    assert PLATFORM.problem(host) is not None, host
    assert PLATFORM.problem(host, 443) is not None, host


@pytest.mark.parametrize("host", [
    "93.184.216.34", "api.openai.com", "8.8.8.8", "2001:db8::1", "10.200.0.5", "192.168.1.10", "1.2.3.4.5",
    "metadata.example.com", "kubernetes.io", "169.255.0.1",
])
def test_ordinary_destinations_are_not_denied(host: str) -> None:
    assert PLATFORM.problem(host, 443) is None, host


def test_an_ip_port_entry_denies_that_port_and_any_port_grant() -> None:
    assert PLATFORM.problem("192.168.49.2", 8443) is not None
    assert PLATFORM.problem("192.168.49.2") is not None  # any port includes 8443
    assert PLATFORM.problem("192.168.49.2", 80) is None


def test_the_problem_says_why_and_what_to_do() -> None:
    problem = PLATFORM.problem("10.0.0.0/8", 443)
    assert problem is not None and "10.96.0.0/12" in problem and "exact external addresses" in problem


def test_a_bad_extra_entry_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--egress-deny 'nope' is not an IP address, CIDR or IP:PORT"):
        EgressDenyList.with_extra(["nope"])


def test_in_a_network_policy_a_grant_inside_a_denied_network_is_dropped_and_one_around_it_excepted() -> None:
    assert PLATFORM.blocks("10.96.0.10", 443) and PLATFORM.blocks("localhost")
    assert not PLATFORM.blocks("10.0.0.0/8", 443)
    assert PLATFORM.inside("10.0.0.0/8", 443) == ["10.96.0.0/12", "10.244.0.0/16"]
    assert PLATFORM.inside("192.168.0.0/16", 8443) == ["192.168.49.2/32"]
    assert PLATFORM.inside("192.168.0.0/16", 80) == []
