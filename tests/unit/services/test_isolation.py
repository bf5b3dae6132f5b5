"""The namespace's baseline NetworkPolicy of step pods: made once, made again when it is deleted or changed,
replaced when it is not what the operator's settings give; a pod's own policy only for egress grants."""

from __future__ import annotations

import copy

from agentflow.k8s import names
from agentflow.k8s.netpol import NetworkConfig
from agentflow.k8s.podspec import ExecutionProfile, Owner
from agentflow.services.isolation import REPAIR_INTERVAL_SECONDS, StepIsolation, same_policy
from agentflow.testing import FakeKube

OWNER = Owner("agentflow.dev/v1alpha1", "Workflow", "wf", "uid-1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def isolation(kube: FakeKube, *, port: int = 8081, clock: Clock | None = None,
              gateway: tuple[str, int | None] | None = None) -> StepIsolation:
    return StepIsolation(kube, NetworkConfig(), callback=("10.0.0.1", port), gateway=gateway,
                         clock=clock or Clock())


async def test_the_baseline_is_made_once_and_then_costs_no_call() -> None:
    kube = FakeKube()
    iso = isolation(kube)
    assert await iso.ensure("team") == 1
    assert await iso.ensure("team") == 0
    assert kube.netpols_created == [names.BASELINE_POLICY] and kube.netpols_replaced == []


async def test_a_baseline_already_there_is_kept_as_it_is_when_it_is_right() -> None:
    kube = FakeKube()
    await isolation(kube).ensure("team")  # another replica, or this operator before a restart
    again = isolation(kube)
    assert await again.ensure("team") == 0
    assert kube.netpols_replaced == []


async def test_a_baseline_of_other_settings_is_replaced_keeping_others_labels() -> None:
    kube = FakeKube()
    await isolation(kube, port=9000).ensure("team")
    kube.netpols[names.BASELINE_POLICY]["metadata"]["labels"]["team.example/owner"] = "platform"
    assert await isolation(kube).ensure("team") == 1
    policy = kube.netpols[names.BASELINE_POLICY]
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 8081}]
    assert policy["metadata"]["labels"]["team.example/owner"] == "platform"
    assert kube.netpols_replaced == [names.BASELINE_POLICY]


async def test_a_deleted_baseline_is_made_again_at_once_where_pods_were_made() -> None:
    kube = FakeKube()
    clock = Clock()
    iso = isolation(kube, clock=clock)
    assert await iso.observed("elsewhere", None) == 0  # no pod of ours there: nothing to protect
    await iso.ensure("team")
    await kube.delete_network_policy("team", names.BASELINE_POLICY)
    assert await iso.observed("team", None) == 1
    assert names.BASELINE_POLICY in kube.netpols
    # deleted again at once: no tug of war, left to the next pod (ensure reads it again)
    await kube.delete_network_policy("team", names.BASELINE_POLICY)
    assert await iso.observed("team", None) == 0
    assert await iso.ensure("team") == 1
    clock.now += REPAIR_INTERVAL_SECONDS
    await kube.delete_network_policy("team", names.BASELINE_POLICY)
    assert await iso.observed("team", None) == 1


async def test_a_widened_baseline_is_put_back_and_its_own_echo_changes_nothing() -> None:
    kube = FakeKube()
    iso = isolation(kube)
    await iso.ensure("team")
    assert await iso.observed("team", kube.netpols[names.BASELINE_POLICY]) == 0  # the watch event of its create
    widened = copy.deepcopy(kube.netpols[names.BASELINE_POLICY])
    widened["spec"]["egress"].append({})  # allow everything
    kube.netpols[names.BASELINE_POLICY] = widened
    assert await iso.observed("team", widened) == 1
    assert kube.netpols[names.BASELINE_POLICY]["spec"]["egress"] == iso.baseline("team")["spec"]["egress"]


def test_what_the_api_server_leaves_out_is_the_same_policy_but_a_narrowed_selector_is_not() -> None:
    desired = isolation(FakeKube()).baseline("team")
    read = copy.deepcopy(desired)
    del read["spec"]["ingress"]  # the API server omits an empty list
    read["metadata"].update(resourceVersion="7", uid="u", annotations={"note": "kept"})
    assert same_policy(read, desired)
    narrowed = copy.deepcopy(read)
    narrowed["spec"]["podSelector"]["matchExpressions"] = [{"key": "x", "operator": "DoesNotExist"}]
    assert not same_policy(narrowed, desired)


def test_a_pod_has_a_policy_of_its_own_only_when_granted_egress_beyond_the_gateway() -> None:
    iso = isolation(FakeKube(), gateway=("10.0.0.9", 4000))
    assert iso.own_policy(OWNER, "team", "p", ExecutionProfile()) is None
    assert iso.own_policy(OWNER, "team", "p", ExecutionProfile(egress=(("10.0.0.9", 4000),))) is None
    policy = iso.own_policy(OWNER, "team", "p", ExecutionProfile(egress=(("api.example", 443),)))
    assert policy is not None and policy["metadata"]["name"] == "p"
    assert policy["metadata"]["annotations"][names.EGRESS_HOSTS_ANNOTATION] == "api.example:443"
