"""Step pods kept from the pod watch: what a reconcile reads instead of listing its run's pods (issue 17)."""

from __future__ import annotations

from typing import Any

from agentflow.k8s import names
from agentflow.services.podcache import RunPods
from agentflow.services.reconcile import WorkflowReconciler

from .test_reconcile import FANOUT, Cluster, catalog, workflow

UID = "0b5e7c1a-0000-4000-8000-000000000001"


def pod(name: str, run: str = UID, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {names.RUN_LABEL: run}, "managedFields": [{"manager": "x"}]},
            "status": {"phase": phase}}


def test_watch_events_keep_the_pods_of_each_run_without_their_managed_fields() -> None:
    pods = RunPods()
    pods.observe(pod("a"), deleted=False)
    pods.observe(pod("b", run="other"), deleted=False)
    pods.observe(pod("a", phase="Succeeded"), deleted=False)
    (a,) = pods.of(UID)
    assert a["status"]["phase"] == "Succeeded" and "managedFields" not in a["metadata"]
    pods.observe(pod("a"), deleted=True)
    assert pods.of(UID) == [] and len(pods) == 1
    pods.observe({"metadata": {"name": "stray"}}, deleted=False)  # no run label: not a step pod of a run
    assert len(pods) == 1


def test_a_listing_adds_what_the_watch_has_not_told_and_replaces_nothing() -> None:
    pods = RunPods()
    pods.observe(pod("a", phase="Failed"), deleted=False)
    pods.seed(UID, [pod("a", phase="Pending"), pod("b")])
    assert {p["metadata"]["name"]: p["status"]["phase"] for p in pods.of(UID)} == {"a": "Failed", "b": "Running"}
    pods.seed("empty", [])
    assert len(pods) == 2


class Watched(Cluster):
    """The reconciler reads pods from a RunPods fed by a "watch" of the fake API server after every change."""

    def __init__(self) -> None:
        self.pods = RunPods()
        self.lists = 0
        super().__init__()
        original = self.kube.list_pods

        async def counted(namespace: str, label_selector: str) -> list[dict[str, Any]]:
            self.lists += 1
            return await original(namespace, label_selector)

        self.kube.list_pods = counted  # type: ignore[method-assign]

    def new_reconciler(self) -> WorkflowReconciler:
        reconciler = super().new_reconciler()
        reconciler.pods = self.pods
        return reconciler

    def kubelet(self) -> None:
        super().kubelet()
        self.pods = RunPods()  # the watch's view: every pod as the API server has it now
        for body in self.kube.pods.values():
            self.pods.observe(body, deleted=False)
        self.reconciler.pods = self.pods


async def test_a_run_driven_from_the_watch_lists_no_pods_and_ends_as_when_it_listed() -> None:
    watched, listed = Watched(), Cluster()
    assert (await watched.run(workflow(FANOUT))).phase == (await listed.run(workflow(FANOUT))).phase == "Succeeded"
    assert watched.lists == 0  # a new run: nothing to list
    assert sorted(watched.executions) == sorted(listed.executions)
    assert not watched.kube.pods and watched.kube.created == listed.kube.created


async def test_a_run_this_process_did_not_start_is_listed_once_then_read_from_the_watch() -> None:
    c = Watched()
    body = workflow(FANOUT)
    await c.reconciler.reconcile(body, catalog())
    c.kubelet()
    c.reconciler = c.new_reconciler()  # a restart: the watch has told nothing yet
    c.pods = c.reconciler.pods = RunPods()
    c.now += 1.0
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded" and c.lists == 1
    assert len(c.executions) == len(set(c.executions)) == 5
