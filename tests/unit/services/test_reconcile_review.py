"""On the cluster, a quarantined attempt waits for a review and takes the approval annotation like an approval step.

The reconciler needs nothing of its own for it: approvals are generic (any Waiting node), and the re-run
attempt's payload carries ``screening: flag`` to its pod from the journal (StepScheduled -> StepRequest).
Also: the operator's parallelism cap reaches the run.
"""

from __future__ import annotations

from typing import Any

from agentflow.engine.values import StepError, StepResult
from agentflow.k8s import names
from agentflow.services.reconcile import DEFAULT_MAX_PARALLEL
from agentflow.testing import decided_by

from .test_reconcile import Cluster, catalog, workflow

UID = "0b5e7c1a-0000-4000-8000-000000000001"
SPEC = {"steps": [{"name": "fetch", "kind": "tool", "tool": "echo"},
                  {"name": "after", "kind": "tool", "tool": "echo", "dependsOn": ["fetch"]}]}


def quarantined_first(node: str, attempt: int, inputs: Any) -> StepResult:
    if node == "fetch" and attempt == 1:
        return StepResult(error=StepError("InjectionQuarantined", "tool 'echo' output quarantined for review: "
                                          "score 0.9", retryable=False))
    return StepResult(output={"node": node})


async def review(annotation: str) -> Cluster:
    c = Cluster(quarantined_first)
    body = workflow(SPEC)
    outcome = await c.run(body, rounds=4)
    assert not outcome.finished
    status = c.kube.statuses[-1]
    assert status["phase"] == "Waiting" and status["message"] == "waiting for a review of the quarantined fetch"
    assert "QuarantinedForReview" in [e["reason"] for e in c.kube.events]
    body["metadata"]["annotations"] = decided_by(body, annotation, '{"node": "fetch", "reason": "quoted"}', "alice")
    await c.run(body)
    return c


async def test_an_approval_annotation_runs_the_reviewed_attempt_with_screening_flagged() -> None:
    c = await review(names.APPROVE_ANNOTATION)
    assert c.kube.statuses[-1]["phase"] == "Succeeded"
    assert c.executions == [("fetch", 1), ("fetch", 2), ("after", 1)]
    assert c.store.attempts[(UID, "fetch", 1)]["request"]["screening"] is None
    assert c.store.attempts[(UID, "fetch", 2)]["request"]["screening"] == "flag"
    assert c.store.attempts[(UID, "after", 1)]["request"]["screening"] is None


async def test_a_reject_annotation_fails_the_run() -> None:
    c = await review(names.REJECT_ANNOTATION)
    status = c.kube.statuses[-1]
    assert status["phase"] == "Failed" and "quarantined input rejected by alice" in status["message"]
    assert c.executions == [("fetch", 1)]


async def test_the_operators_parallelism_cap_holds_a_wide_workflow_back() -> None:
    wide = {"steps": [{"name": f"s{i}", "kind": "tool", "tool": "echo"} for i in range(DEFAULT_MAX_PARALLEL + 20)]}
    c = Cluster()
    await c.reconciler.reconcile(workflow(wide), catalog())
    assert len(c.kube.pods) == DEFAULT_MAX_PARALLEL
