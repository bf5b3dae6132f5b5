"""Which pod runs which attempt: how a step pod's Kubernetes identity maps to the one attempt it may act for;
and the runs the operator stored, as the episodic memory reads them back."""

from __future__ import annotations

import dataclasses

__all__ = ["AttemptPod", "StoredRun"]


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptPod:
    """The pod of one attempt, as the operator recorded it when it created the pod.

    ``pod_uid`` None: the pod was created but its uid is not recorded yet (the operator records it on its
    next pass). ``ended``: the attempt has a result, so its pod's credential is void. ``fingerprint``: the
    digest of the pod spec the operator made (agentflow.k8s.podspec.fingerprint).
    """

    namespace: str
    workflow: str
    name: str
    run_uid: str = ""
    node: str = ""
    attempt: int = 0
    pod_uid: str | None = None
    ended: bool = False
    fingerprint: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as the operator stored it: its uid, Workflow name and the manifests it ran with (YAML text)."""

    run_uid: str
    workflow: str
    manifests: str
