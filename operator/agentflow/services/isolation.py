"""The NetworkPolicies of step pods: the namespace's baseline, kept, and a policy of its own for a granted pod.

    ensure(namespace)      before the first isolated step pod of a namespace (and again after the baseline was
                           seen deleted or changed): the baseline ``agentflow-step-baseline`` is read, created when
                           missing, replaced when it is not what this operator's settings give; then remembered,
                           so later pods cost no API call for it
    own_policy(...)        the pod's own NetworkPolicy when it is granted egress beyond the platform's endpoints
                           (agentflow.k8s.netpol.needs_own_policy), else None: no write at all for that step
    observed(namespace, body)
                           the baseline's watch events (controller.handlers): a deleted or changed baseline is
                           ensured again at once where this process has made isolated pods, so the pods
                           running there are not left without their egress restricted (at most once per
                           REPAIR_INTERVAL_SECONDS: no tug of war with a writer of other settings)

Creating and replacing are fenced by the API server: a create that finds one (another replica made it) reads it
and compares; a replace carries the resourceVersion read (Conflict: another writer was first, the next call reads
again). Errors are KubeErrors, raised to the reconcile (its pod is not created without the baseline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..k8s import names
from ..k8s.kube import Kube, NotFound
from ..k8s.netpol import NetworkConfig, build_baseline_policy, build_network_policy, needs_own_policy
from ..k8s.podspec import Owner
from ..k8s.profile import Egress, ExecutionProfile

log = logging.getLogger("agentflow.isolation")

REPAIR_INTERVAL_SECONDS = 30.0
"""A baseline seen deleted or changed is made again at once at most this often per namespace."""


def _pruned(value: Any) -> Any:
    """``value`` without empty lists, maps and nulls (the API server leaves out ``ingress: []``)."""
    if isinstance(value, Mapping):
        return {k: _pruned(v) for k, v in value.items() if v not in ([], {}, None)}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def same_policy(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether ``current`` (as read) already is ``desired``: the same spec, and the labels and the egress-hosts
    annotation the operator sets (others' labels and annotations are left alone)."""
    cur_meta, want_meta = current.get("metadata") or {}, desired.get("metadata") or {}
    labels, annotations = cur_meta.get("labels") or {}, cur_meta.get("annotations") or {}
    return (_pruned(current.get("spec") or {}) == _pruned(desired.get("spec") or {})
            and all(labels.get(k) == v for k, v in (want_meta.get("labels") or {}).items())
            and annotations.get(names.EGRESS_HOSTS_ANNOTATION)
            == (want_meta.get("annotations") or {}).get(names.EGRESS_HOSTS_ANNOTATION))


class StepIsolation:
    """The platform's side of step pods' NetworkPolicies (callback, gateway, collector, deny-list), and which
    namespaces have their baseline (in memory; the API server is the truth, read again after a restart)."""

    def __init__(self, kube: Kube, network: NetworkConfig, *, callback: tuple[str, int],
                 gateway: Egress | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.network = network
        self.callback = callback
        self.gateway = gateway
        self._ensured: set[str] = set()
        self._used: set[str] = set()
        """Namespaces where this process made isolated pods: a baseline deleted there is made again at once."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._repaired: dict[str, float] = {}
        self.clock = clock

    def baseline(self, namespace: str) -> dict[str, Any]:
        return build_baseline_policy(namespace, callback=self.callback, network=self.network, gateway=self.gateway)

    async def ensure(self, namespace: str) -> int:
        """Make sure ``namespace`` has the baseline this operator's settings give; the API writes it took (0 once
        it is known to be there)."""
        if namespace in self._ensured:
            return 0
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        async with lock:  # a burst of Workflows in a new namespace: one of them reads and creates, not all
            if namespace in self._ensured:
                return 0
            desired = self.baseline(namespace)
            writes = 0
            try:
                current = await self.kube.get_network_policy(namespace, names.BASELINE_POLICY)
            except NotFound:
                await self.kube.apply_network_policy(namespace, desired)  # one made meanwhile: kept, read below
                writes += 1
                current = await self.kube.get_network_policy(namespace, names.BASELINE_POLICY)
            if not same_policy(current, desired):
                meta = current.get("metadata") or {}
                body = {**desired, "metadata": {
                    **desired["metadata"], "resourceVersion": meta.get("resourceVersion"),
                    "labels": {**(meta.get("labels") or {}), **desired["metadata"]["labels"]},
                    "annotations": {**{k: v for k, v in (meta.get("annotations") or {}).items()
                                       if k != names.EGRESS_HOSTS_ANNOTATION},
                                    **(desired["metadata"].get("annotations") or {})}}}
                log.info("the baseline NetworkPolicy of step pods in %s is not what this operator's settings give: "
                         "replaced", namespace)
                await self.kube.replace_network_policy(namespace, body)
                writes += 1
            self._ensured.add(namespace)
            self._used.add(namespace)
            return writes

    async def observed(self, namespace: str, body: Mapping[str, Any] | None) -> int:
        """The baseline of ``namespace`` as a watch event shows it (None: deleted). Forgotten when it is not what
        it should be, and ensured again at once where this process made isolated pods; the API writes taken."""
        if body is not None and same_policy(body, self.baseline(namespace)):
            return 0
        self._ensured.discard(namespace)
        if namespace not in self._used:
            return 0
        now = self.clock()
        if now - self._repaired.get(namespace, -REPAIR_INTERVAL_SECONDS) < REPAIR_INTERVAL_SECONDS:
            # made again moments ago and changed again: another writer with other settings (two replicas of
            # different versions in a rollout); no tug of war, the next pod created here ensures it again
            log.warning("the baseline NetworkPolicy of step pods in %s changed again right after it was made "
                        "again; left to the next step pod", namespace)
            return 0
        self._repaired[namespace] = now
        log.warning("the baseline NetworkPolicy of step pods in %s was %s: made again", namespace,
                    "deleted" if body is None else "changed")
        return await self.ensure(namespace)

    def own_policy(self, owner: Owner, namespace: str, pod_name: str,
                   profile: ExecutionProfile) -> dict[str, Any] | None:
        """The NetworkPolicy of pod ``pod_name`` when it is granted egress of its own, else None."""
        if not needs_own_policy(profile, self.gateway):
            return None
        net = self.network
        return build_network_policy(owner, namespace, pod_name, profile, callback=self.callback,
                                    gateway=self.gateway, callback_pods=net.callback_pods,
                                    gateway_pods=net.gateway_pods, collector=net.collector,
                                    collector_pods=net.collector_pods, deny=net.deny)
