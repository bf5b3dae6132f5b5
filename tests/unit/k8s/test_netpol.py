"""The NetworkPolicy of a step pod selects exactly that pod and lets out only what was granted."""

from __future__ import annotations

import pytest

from agentflow.engine.values import StepRequest
from agentflow.k8s import names
from agentflow.k8s.egress import EgressDenyList
from agentflow.k8s.netpol import build_network_policy, cidr_of, dns_peer
from agentflow.k8s.podspec import ExecutionProfile, Owner, PodConfig, build_step_pod

OWNER = Owner("agentflow.dev/v1alpha1", "Workflow", "triage", "uid-1")
CONFIG = PodConfig(image="runtime:dev", callback_url="http://10.0.0.1:8443")


def _selects(policy: dict[str, object], labels: dict[str, str]) -> bool:
    match = policy["spec"]["podSelector"]["matchLabels"]  # type: ignore[index]
    return all(labels.get(k) == v for k, v in match.items())


def test_it_selects_its_pod_and_no_other_attempt_or_node() -> None:
    pods = [build_step_pod(OWNER, "ns", StepRequest("uid-1", node, "map", "tool", attempt, {}), CONFIG)
            for node in ("map[3]", "map-3") for attempt in (1, 2)]
    for pod in pods:
        policy = build_network_policy(OWNER, "ns", pod["metadata"]["name"], ExecutionProfile(),
                                      callback=("10.0.0.1", 8443))
        assert [_selects(policy, p["metadata"]["labels"]) for p in pods].count(True) == 1
        assert _selects(policy, pod["metadata"]["labels"])


def test_no_grants_means_the_callback_only_not_even_dns() -> None:
    policy = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8443))
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    assert egress == [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 8443}]}]
    assert "annotations" not in policy["metadata"]


def test_dns_only_when_a_name_must_be_resolved() -> None:
    named = build_network_policy(OWNER, "ns", "p", ExecutionProfile(egress=(("api.example", 443),)),
                                 callback=("10.0.0.1", 8443))
    assert {p["port"] for p in named["spec"]["egress"][1]["ports"]} == {53}
    callback_by_name = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("operator.svc", 8443))
    assert any(r.get("to") == [dns_peer()] for r in callback_by_name["spec"]["egress"])


def test_denied_networks_inside_a_granted_cidr_are_excepted() -> None:
    profile = ExecutionProfile(egress=(("169.0.0.0/8", 443), ("8.8.8.8", 53)))
    deny = EgressDenyList.with_extra(["169.1.0.0/16"])
    policy = build_network_policy(OWNER, "ns", "p", profile, callback=("10.0.0.1", 8443), deny=deny)
    blocks = [r["to"][0]["ipBlock"] for r in policy["spec"]["egress"][1:]]
    assert blocks[0] == {"cidr": "169.0.0.0/8", "except": ["169.254.0.0/16", "169.1.0.0/16"]}
    assert blocks[1] == {"cidr": "8.8.8.8/32"}


def test_the_gateway_pods_are_allowed_by_label() -> None:
    policy = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8081),
                                  gateway=("10.96.0.20", 8082),
                                  gateway_pods=("agentflow-system", {"app.kubernetes.io/component": "gateway"}))
    assert policy["spec"]["egress"][1] == {"to": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agentflow-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}],
        "ports": [{"protocol": "TCP", "port": 8082}]}


def test_without_dns_only_the_callback_is_reachable() -> None:
    policy = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.0/24", 80), dns=False)
    assert len(policy["spec"]["egress"]) == 1


def test_hostnames_go_to_the_annotation_never_to_rules() -> None:
    profile = ExecutionProfile(egress=(("b.example", 443), ("a.example", None), ("b.example", 443)))
    policy = build_network_policy(OWNER, "ns", "p", profile, callback=("10.0.0.1", 8443))
    assert policy["metadata"]["annotations"] == {names.EGRESS_HOSTS_ANNOTATION: "a.example,b.example:443"}
    assert len(policy["spec"]["egress"]) == 2  # the callback and DNS: names resolve, rules never name them


def test_a_callback_by_name_allows_its_port_to_any_address() -> None:
    # A NetworkPolicy cannot match a name; the callback port stays open rather than the step being cut off.
    policy = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("operator.svc", 8443), dns=False)
    assert policy["spec"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]


def test_a_gateway_address_is_allowed_and_a_gateway_name_is_annotated() -> None:
    by_ip = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8081), dns=False,
                                 gateway=("10.0.0.9", 4000))
    assert by_ip["spec"]["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.0.0.9/32"}}],
                                          "ports": [{"protocol": "TCP", "port": 4000}]}
    by_name = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8081), dns=False,
                                   gateway=("gateway.agentflow.svc", 4000))
    assert by_name["metadata"]["annotations"][names.EGRESS_HOSTS_ANNOTATION] == "gateway.agentflow.svc:4000"


@pytest.mark.parametrize(("host", "cidr"), [("10.1.2.3", "10.1.2.3/32"), ("10.1.2.3/16", "10.1.0.0/16"),
                                            ("2001:db8::1", "2001:db8::1/128")])
def test_cidr_of(host: str, cidr: str) -> None:
    assert cidr_of(host) == cidr


def test_the_policy_is_owned_by_the_workflow() -> None:
    policy = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8443))
    (ref,) = policy["metadata"]["ownerReferences"]
    assert ref["uid"] == "uid-1" and ref["controller"] is True


def test_the_trace_collector_is_allowed_by_address_or_pods_and_by_name_through_the_annotation() -> None:
    by_ip = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8081),
                                 collector=("10.96.0.30", 4318))
    assert by_ip["spec"]["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.96.0.30/32"}}],
                                          "ports": [{"protocol": "TCP", "port": 4318}]}
    assert len(by_ip["spec"]["egress"]) == 2 and "annotations" not in by_ip["metadata"]  # no DNS for an address
    pods = ("observability", {"app.kubernetes.io/name": "otel-collector"})
    by_name = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8081),
                                   collector=("otel.observability", 4318), collector_pods=pods)
    egress = by_name["spec"]["egress"]
    assert {"to": [dns_peer()], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]} in egress
    assert {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}}],
            "ports": [{"protocol": "TCP", "port": 4318}]} in egress
    assert by_name["metadata"]["annotations"][names.EGRESS_HOSTS_ANNOTATION] == "otel.observability:4318"
    without = build_network_policy(OWNER, "ns", "p", ExecutionProfile(), callback=("10.0.0.1", 8081))
    assert len(without["spec"]["egress"]) == 1  # no collector, no rule
