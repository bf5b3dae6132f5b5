"""The operator's reconcile binds a step's prompt family to the version the run's uid gets, records it in the
journal and the status, hands the step pod manifests naming that version, and keeps it after a restart even
when the canary weight changed since (the shipped fakes: FakeKube, MemoryStore)."""

from __future__ import annotations

from typing import Any

import yaml

from agentflow.k8s.podspec import PodConfig
from agentflow.models import Agent, Catalog, PromptVersion
from agentflow.prompts.rollout import bucket
from agentflow.services.reconcile import WorkflowReconciler
from agentflow.testing import SIGNING_KEY, FakeKube, MemoryStore

UID = "0b5e7c1a-0000-4000-8000-000000000001"


def catalog(weight: int) -> Catalog:
    c = Catalog()
    c.add(Agent.model_validate({"metadata": {"name": "a"}, "spec": {"role": "r", "model": {"name": "m"}}}))
    for name, version, canary in (("t-v1", "1", None), ("t-v2", "2", {"baseline": {"name": "t-v1"},
                                                                     "weight": weight})):
        spec: dict[str, Any] = {"prompt": "t", "version": version, "messages": [{"role": "user", "content": "x"}]}
        if canary:
            spec["canary"] = canary
        c.add(PromptVersion.model_validate({"metadata": {"name": name}, "spec": spec}))
    return c


BODY = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "wf", "namespace": "team", "uid": UID, "generation": 1},
        "spec": {"steps": [{"name": "s", "kind": "llm", "agentRef": {"name": "a"}, "promptRef": {"family": "t"}}]}}


def reconciler(kube: FakeKube, store: MemoryStore) -> WorkflowReconciler:
    return WorkflowReconciler(kube, store, PodConfig(image="runtime:dev", callback_url="http://10.88.0.1:8081"),
                              signing_key=SIGNING_KEY, clock=lambda: 1000.0)


async def test_the_run_gets_its_version_and_keeps_it_after_a_restart() -> None:
    kube, store = FakeKube(), MemoryStore()
    assert 0 <= bucket(UID, "t") < 100  # so at weight 100 the run gets the candidate
    await reconciler(kube, store).reconcile(BODY, catalog(100))
    started = (await store.load_journal(UID))[0].event
    assert started.data["prompts"]["s"]["name"] == "t-v2" and started.data["prompts"]["s"]["reason"] == "candidate"
    assert kube.statuses[-1]["prompts"] == {"s": {"family": "t", "name": "t-v2", "version": "2",
                                                  "reason": "candidate"}}
    payload = store.attempts[(UID, "s", 1)]
    manifests = yaml.safe_load_all(payload["manifests"])
    (workflow,) = [m for m in manifests if m["kind"] == "Workflow"]
    assert workflow["spec"]["steps"][0]["promptRef"] == {"name": "t-v2"}
    # a new operator process, and the canary weight set to 0 since: the started run keeps t-v2
    again = reconciler(kube, store)
    await again.reconcile(BODY, catalog(0))
    assert again.runs[UID].run.prompts["s"]["name"] == "t-v2"
    assert kube.statuses[-1]["prompts"]["s"]["name"] == "t-v2"
