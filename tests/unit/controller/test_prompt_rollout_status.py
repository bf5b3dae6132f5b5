"""A PromptVersion's status says where it stands in its family's rollout (role, weight), written to the
cluster (the shipped FakeKube) and re-written when the family's split changes; two candidates are an
invalid spec naming spec.canary."""

from __future__ import annotations

import asyncio
from typing import Any

from agentflow.controller.handlers import same_readiness
from agentflow.models import Catalog, PromptVersion
from agentflow.services.resources import check_dependent
from agentflow.testing import FakeKube


def body(name: str, version: str, canary: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"prompt": "triage", "version": version, "messages": [{"role": "user", "content": "x"}]}
    if canary is not None:
        spec["canary"] = canary
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptVersion",
            "metadata": {"name": name, "namespace": "team", "generation": 1}, "spec": spec}


def catalog(*bodies: dict[str, Any]) -> Catalog:
    out = Catalog()
    for b in bodies:
        out.add(PromptVersion.model_validate(b))
    return out


def sync(kube: FakeKube, bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the readiness handler does for PromptVersions: check each, patch the status when it changed."""
    cat = catalog(*bodies)

    async def run() -> dict[str, dict[str, Any]]:
        out = {}
        for b in bodies:
            current = (await kube.get_resource("promptversions", "team", b["metadata"]["name"])).get("status") or {}
            status = check_dependent(b, cat, now=0.0)
            if not same_readiness(current, status):
                await kube.patch_status("promptversions", "team", b["metadata"]["name"], status)
            out[b["metadata"]["name"]] = (await kube.get_resource("promptversions", "team",
                                                                  b["metadata"]["name"]))["status"]
        return out

    return asyncio.run(run())


def test_the_split_is_on_the_status_and_follows_the_weight() -> None:
    v1, v2 = body("triage-v1", "1"), body("triage-v2", "2", {"baseline": {"name": "triage-v1"}, "weight": 10})
    kube = FakeKube(v1, v2)
    statuses = sync(kube, [v1, v2])
    assert statuses["triage-v1"]["rollout"] == {"family": "triage", "role": "stable", "weight": 90,
                                                "stable": "triage-v1", "candidate": "triage-v2"}
    assert statuses["triage-v2"]["rollout"]["role"] == "candidate"
    assert statuses["triage-v2"]["rollout"]["weight"] == 10
    assert statuses["triage-v2"]["conditions"][0]["status"] == "True"
    # a new candidate replaces v2's spec (immutable: a new PromptVersion); v2 without canary is the highest
    v2b = body("triage-v2", "2")
    statuses = sync(kube, [v1, v2b])
    assert statuses["triage-v1"]["rollout"] == {"family": "triage", "role": "inactive", "weight": 0,
                                                "stable": "triage-v2"}
    assert statuses["triage-v2"]["rollout"]["weight"] == 100


def test_two_candidates_are_an_invalid_spec() -> None:
    v1 = body("triage-v1", "1")
    v2 = body("triage-v2", "2", {"baseline": {"name": "triage-v1"}, "weight": 10})
    v3 = body("triage-v3", "3", {"baseline": {"name": "triage-v1"}, "weight": 5})
    status = check_dependent(v3, catalog(v1, v2, v3), now=0.0)
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.canary: prompt family 'triage' has 2 candidates")
    assert status["rollout"] is None
