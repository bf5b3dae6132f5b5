"""PromptRollouts in the operator: RolloutSync reads the rollout, its PromptVersions and the journal (the shipped
FakeKube and MemoryStore stand in for the API server and PostgreSQL), decides, and writes status, an Event and an
audit record per decision; nothing is written twice, and another replica's write wins."""

from __future__ import annotations

import copy
from typing import Any

from agentflow.engine.journal import Journal
from agentflow.services.canary import RolloutSync
from agentflow.storage.outbox import EventSource
from agentflow.testing import FakeKube, MemoryAuditSink, MemoryStore
from agentflow.testing import prompt_run_events as run_events

NS = "team"


def version(name: str, phase: str | None = "Passed", suite: bool = True, family: str = "t") -> dict[str, Any]:
    spec: dict[str, Any] = {"prompt": family, "version": name[-1], "messages": [{"role": "user", "content": "hi"}]}
    if suite:
        spec["evaluations"] = {"agentRef": {"name": "a"}, "cases": [{"name": "c"}]}
    body: dict[str, Any] = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptVersion",
                            "metadata": {"name": name, "namespace": NS}, "spec": spec}
    if phase is not None:
        body["status"] = {"evaluation": {"phase": phase, "passRate": 1.0 if phase == "Passed" else 0.5}}
    return body


def rollout(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptRollout",
            "metadata": {"name": "t-rollout", "namespace": NS, "uid": "u-1", "generation": 1},
            "spec": {"prompt": "t", "stable": "t-v1", "candidate": "t-v2",
                     "steps": [{"weight": 20, "minRuns": 3}, {"weight": 50, "minRuns": 3}],
                     "onlineGates": [{"signal": "schemaFailureRate"}], "minSamples": 10, **spec}}


class Harness:
    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.kube = FakeKube(*bodies)
        self.store = MemoryStore()
        self.audit = MemoryAuditSink()
        self.now = 1000.0
        self.sync = RolloutSync(self.kube, self.store, audit=self.audit, clock=lambda: self.now)
        self.runs = 0

    def body(self) -> dict[str, Any]:
        return copy.deepcopy(self.kube.resources[("promptrollouts", NS, "t-rollout")])

    async def tick(self) -> str | None:
        decision = await self.sync.sync(self.body())
        self.now += 10
        return None if decision is None else decision.action

    async def runs_of(self, name: str, count: int, failing: int = 0) -> None:
        for i in range(count):
            self.runs += 1
            journal = Journal()
            records = [journal.append(e) for e in run_events(name, at=self.now, schema_failure=i < failing)]
            await self.store.append(f"run-{self.runs}", records, EventSource(NS, "w"))


async def test_a_good_candidate_is_promoted_step_by_step() -> None:
    h = Harness(version("t-v1"), version("t-v2"), rollout())
    assert await h.tick() == "Start"
    status = h.body()["status"]
    assert (status["phase"], status["weight"], status["stepIndex"]) == ("Progressing", 20, 0)
    await h.runs_of("t-v2", 5)
    await h.runs_of("t-v1", 2)
    assert await h.tick() == "Wait"
    assert "stable has 2 of 3 runs" in h.body()["status"]["conditions"][1]["message"]
    await h.runs_of("t-v1", 8)
    assert await h.tick() == "Wait"
    assert "schemaFailureRate has 5/10 samples (candidate/stable) of 10" in h.body()["status"]["conditions"][1][
        "message"]
    await h.runs_of("t-v2", 5)
    assert await h.tick() == "Advance"
    status = h.body()["status"]
    assert (status["weight"], status["stepIndex"], status["candidateRuns"]) == (50, 1, 0)
    gate = status["gates"][0]
    assert (gate["signal"], gate["verdict"], gate["candidateSamples"], gate["stableSamples"]) == (
        "schemaFailureRate", "Pass", 10, 10)
    await h.runs_of("t-v2", 6)
    await h.runs_of("t-v1", 6)
    assert await h.tick() == "Promote"
    status = h.body()["status"]
    assert (status["phase"], status["weight"]) == ("Promoted", 100)
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True"
    assert await h.tick() is None  # done: nothing more is written
    reasons = [e["reason"] for e in h.kube.events]
    assert reasons == ["RolloutStarted", "RolloutAdvanced", "RolloutPromoted"]
    assert [(e.kind, e.decision, e.subject) for e in h.audit.events] == [
        ("policy_decision", a, f"{NS}/promptrollout/t-rollout") for a in ("start", "advance", "promote")]
    assert h.audit.events[-1].data["gates"][0]["verdict"] == "Pass"


async def test_a_worse_candidate_is_rolled_back() -> None:
    h = Harness(version("t-v1"), version("t-v2"), rollout())
    await h.tick()
    await h.runs_of("t-v2", 12, failing=8)
    await h.runs_of("t-v1", 12, failing=0)
    assert await h.tick() == "Rollback"
    status = h.body()["status"]
    assert (status["phase"], status["weight"]) == ("RolledBack", 0)
    assert "schemaFailureRate fail: candidate 0.6667 (n=12) vs stable 0 (n=12)" in status["lastDecision"]["message"]
    assert h.kube.events[-1]["type"] == "Warning" and h.kube.events[-1]["reason"] == "RolloutRolledBack"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"


async def test_a_candidate_that_failed_its_evaluation_never_gets_traffic() -> None:
    h = Harness(version("t-v1"), version("t-v2", phase="Running"), rollout())
    assert await h.tick() == "Wait"
    status = h.body()["status"]
    assert (status["phase"], status["weight"]) == ("WaitingForEvaluation", 0)
    assert h.kube.events[-1]["reason"] == "WaitingForEvaluation"
    assert await h.tick() == "Wait" and len(h.kube.events) == 1  # the same wait: no new Event or write
    h.kube.resources[("promptversions", NS, "t-v2")]["status"]["evaluation"]["phase"] = "Failed"
    assert await h.tick() == "Fail"
    status = h.body()["status"]
    assert (status["phase"], status["weight"], status["lastDecision"]["reason"]) == ("Failed", 0, "EvaluationFailed")
    assert h.audit.events[-1].decision == "fail"


async def test_a_new_generation_starts_over() -> None:
    h = Harness(version("t-v1"), version("t-v2"), version("t-v3"), rollout())
    await h.tick()
    body = h.kube.resources[("promptrollouts", NS, "t-rollout")]
    body["spec"]["candidate"] = "t-v3"
    body["metadata"]["generation"] = 2
    assert await h.tick() == "Start"
    assert h.body()["status"]["observedGeneration"] == 2


async def test_wrong_family_and_missing_versions() -> None:
    h = Harness(version("t-v1"), version("t-v2", family="o"), rollout())
    assert await h.tick() == "Fail"
    assert "spec.candidate: PromptVersion 't-v2' is of family 'o'" in h.body()["status"]["lastDecision"]["message"]
    h = Harness(version("t-v1"), rollout())
    assert await h.tick() == "Wait"
    assert h.body()["status"]["lastDecision"]["reason"] == "MissingPromptVersion"


async def test_another_replicas_write_wins() -> None:
    h = Harness(version("t-v1"), version("t-v2"), rollout())
    stale = h.body()
    h.kube.resources[("promptrollouts", NS, "t-rollout")]["metadata"]["resourceVersion"] = "7"
    await h.sync.sync(stale)
    assert "status" not in h.body() and h.kube.events == [] and h.audit.events == []
