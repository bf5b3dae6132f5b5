"""Step pods by run, kept from the operator's pod watch, so a reconcile does not list them (issue 17).

Before, every reconcile listed its run's pods by label: the API server filters every pod of the namespace
for that, so a burst of N Workflows cost O(N) per reconcile and O(N^2) in all, through the few threads the
Kubernetes client has. Now the watch the operator has anyway (controller.handlers.pod_changed: every pod
labelled ``app.kubernetes.io/managed-by=agentflow``) keeps :class:`RunPods`, and the reconciler reads it.

    observe(body, deleted)   a watch event: the pod kept (without its managedFields) or dropped
    of(run_uid)              the run's pods as last seen
    seed(run_uid, pods)      a listing, for a run this process has not driven before (after a restart the
                             watch's first listing may not have come yet), or a pod just created (the body
                             sent, with its uid): what the watch has not told about is added, nothing it told
                             is replaced

It is as current as the watch: one just gone may still be there (deleting it again is a no-op; a pod the watch
saw deleted while its attempt runs is gone from it, and the reconciler creates it again as it did when it listed).
Every change of a pod pokes its run, so the next reconcile sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..k8s import names


def _kept(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


class RunPods:
    """Step pods by their run's label value (``agentflow.dev/run``), then by name."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, dict[str, Any]]] = {}

    def observe(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        meta = body.get("metadata") or {}
        run = (meta.get("labels") or {}).get(names.RUN_LABEL)
        name = meta.get("name")
        if not run or not name:
            return
        if deleted:
            pods = self._runs.get(run)
            if pods is not None:
                pods.pop(name, None)
                if not pods:
                    del self._runs[run]
            return
        self._runs.setdefault(run, {})[name] = _kept(body)

    def of(self, run_uid: str) -> list[dict[str, Any]]:
        return list(self._runs.get(names.label_value(run_uid), {}).values())

    def seed(self, run_uid: str, pods: Iterable[Mapping[str, Any]]) -> None:
        known = self._runs.setdefault(names.label_value(run_uid), {})
        for pod in pods:
            name = (pod.get("metadata") or {}).get("name")
            if name and name not in known:
                known[name] = _kept(pod)
        if not known:
            del self._runs[names.label_value(run_uid)]

    def __len__(self) -> int:
        return sum(len(p) for p in self._runs.values())
