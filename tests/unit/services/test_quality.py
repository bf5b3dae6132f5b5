"""Quality drift in the operator: the reconciler's appends (MeteredStore) feed QualityWatch, which puts Drifting on
the Agent with an Event and sets the metrics; a refused write never fails the append. The shipped fakes (FakeKube,
MemoryStore) stand in for the API server and PostgreSQL."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.k8s.kube import Forbidden
from agentflow.quality import DriftSettings
from agentflow.services.metrics import MeteredStore, Metrics
from agentflow.services.quality import QualityMetrics, QualityWatch
from agentflow.storage.outbox import EventSource
from agentflow.testing import FakeKube, MemoryStore

from ..quality.test_signals import DAG, plan_of

E = EventType
AGENT = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "writer", "namespace": "team", "uid": "a-1", "generation": 1},
         "spec": {"role": "r", "model": {"name": "openai/gpt-4o-mini"}},
         "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "ok"}]}}
SOURCE = EventSource("team", "wf", "Running")


class Harness:
    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.now = 1000.0
        self.metrics = Metrics()
        self.quality = QualityMetrics(self.metrics.registry)
        self.watch = QualityWatch(kube, self.quality, settings=DriftSettings(warmup=40, hold=60),
                                  clock=lambda: self.now)
        self.watch.follow({"r1": SimpleNamespace(plan=plan_of(DAG))})
        self.store = MeteredStore(MemoryStore(), self.metrics, [self.watch])
        self.journal = Journal()
        self.attempt = 0
        self.rng = random.Random(5)

    async def attempts(self, n: int, failure_rate: float) -> None:
        for _ in range(n):
            self.attempt += 1
            self.now += 10
            failed = self.rng.random() < failure_rate
            end = (Event(E.step_failed, "draft", {"attempt": self.attempt, "error": {"type": "X"}}, self.now + 2)
                   if failed else Event(E.step_succeeded, "draft", {"attempt": self.attempt}, self.now + 2))
            await self.store.append("r1", self.journal.extend([
                Event(E.step_scheduled, "draft", {"step": "draft", "kind": "llm", "attempt": self.attempt},
                      self.now),
                Event(E.cost_recorded, "draft", {"call": {"kind": "llm", "name": "m", "cost_usd": 0.01}},
                      self.now + 1),
                end]), SOURCE)

    def conditions(self) -> dict[str, dict[str, Any]]:
        status = self.kube.resources[("agents", "team", "writer")].get("status") or {}
        return {c["type"]: c for c in status.get("conditions") or []}

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


async def test_a_failure_rate_that_rises_makes_the_agent_drifting_with_an_event_and_a_metric() -> None:
    h = Harness(FakeKube(AGENT))
    await h.attempts(200, 0.02)
    assert "Drifting" not in h.conditions() and not h.kube.events
    await h.attempts(40, 0.6)
    drifting = h.conditions()["Drifting"]
    assert (drifting["status"], drifting["reason"]) == ("True", "QualityDrift")
    assert "failure of PromptVersion summarize-v2 " in drifting["message"]  # and cost per success: failures cost
    assert h.conditions()["Ready"]["status"] == "True"  # kept
    (event,) = [e for e in h.kube.events if e["reason"] == "Drifting" and "failure of" in e["message"]]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Agent"
    assert event["involvedObject"]["name"] == "writer" and event["involvedObject"]["uid"] == "a-1"
    labels = {"namespace": "team", "agent": "writer", "prompt": "summarize-v2", "signal": "failure"}
    assert h.sample("agentflow_quality_drifting", **labels) == 1
    assert h.sample("agentflow_quality_drift_alarms_total", **labels) == 1
    assert h.sample("agentflow_quality_observations_total", namespace="team", agent="writer",
                    prompt="summarize-v2") == 240
    # the new level is the new baseline; after `hold` quiet attempts the drift is cleared
    await h.attempts(150, 0.6)
    assert h.conditions()["Drifting"]["status"] == "False"
    assert h.sample("agentflow_quality_drifting", **labels) == 0
    assert [e["reason"] for e in h.kube.events].count("DriftCleared") == 1


async def test_a_refused_write_is_logged_and_the_append_goes_on() -> None:
    kube = FakeKube(AGENT)

    async def refuse(*_: Any) -> None:
        raise Forbidden("patch agents/writer status: 403", 403)

    kube.patch_status = refuse  # type: ignore[method-assign]
    h = Harness(kube)
    await h.attempts(200, 0.02)
    await h.attempts(40, 0.6)
    assert len(await h.store.load_journal("r1")) == 240 * 3  # every append stored
    assert h.sample("agentflow_quality_drifting", namespace="team", agent="writer", prompt="summarize-v2",
                    signal="failure") == 1


async def test_runs_without_a_plan_and_a_deleted_agent_are_skipped() -> None:
    h = Harness(FakeKube())  # no Agent object
    await h.attempts(200, 0.02)
    await h.attempts(40, 0.6)
    assert not h.kube.events
    other = QualityWatch(FakeKube(AGENT))  # follows no runs
    await other.appended("r2", Journal().extend([Event(E.run_started, None, {}, 0.0)]), SOURCE)
    assert other.tracker._runs == {}


async def test_an_observer_that_raises_never_fails_the_append() -> None:
    class Broken:
        async def appended(self, *_: Any) -> None:
            raise RuntimeError("a bug")

        def forget(self, run_uid: str) -> None:
            pass

    store = MeteredStore(MemoryStore(), Metrics(), [Broken()])
    await store.append("r1", Journal().extend([Event(E.run_started, None, {}, 0.0)]), SOURCE)
    assert len(await store.load_journal("r1")) == 1


async def test_runs_driven_by_the_reconciler_raise_drifting_on_the_agent() -> None:
    """The whole path: WorkflowReconciler -> MeteredStore -> QualityWatch, llm steps run by the fake kubelet."""
    from agentflow.engine.values import CallRecord, StepError, StepResult
    from agentflow.k8s.podspec import PodConfig
    from agentflow.models import Agent, Catalog, PromptVersion
    from agentflow.services.reconcile import WorkflowReconciler
    from agentflow.testing import SIGNING_KEY

    from .test_reconcile import Cluster, workflow

    cat = Catalog()
    cat.add(Agent.model_validate({"metadata": {"name": "writer", "namespace": "team"},
                                  "spec": {"role": "r", "model": {"name": "offline/echo"}}}))
    cat.add(PromptVersion.model_validate({"metadata": {"name": "summarize-v2", "namespace": "team"}, "spec": {
        "prompt": "summarize", "version": "2", "messages": [{"role": "user", "content": "hi"}]}}))
    rng = random.Random(11)
    failure_rate = 0.02

    def behaviour(node: str, attempt: int, inputs: Any) -> StepResult:
        calls = (CallRecord("llm", "offline/echo", "h", "x", 10, 5, 0.01),)
        if rng.random() < failure_rate:
            return StepResult(error=StepError("InvalidModelOutput", "no", False), calls=calls)
        return StepResult(output={"ok": True}, calls=calls)

    cluster = Cluster(behaviour)
    cluster.kube.add_resource(AGENT)
    metrics = Metrics()
    watch = QualityWatch(cluster.kube, QualityMetrics(metrics.registry), settings=DriftSettings(warmup=40, hold=60),
                         clock=lambda: cluster.now)
    reconciler = WorkflowReconciler(cluster.kube, MeteredStore(cluster.store, metrics, [watch]),
                                    PodConfig(image="runtime:dev", callback_url="http://10.88.0.1:8081"),
                                    signing_key=SIGNING_KEY, clock=lambda: cluster.now)
    watch.follow(reconciler.runs)
    spec = {"steps": [{"name": "draft", "kind": "llm", "agentRef": {"name": "writer"},
                       "promptRef": {"name": "summarize-v2"}}]}

    started = 0

    async def runs(n: int) -> None:
        nonlocal started
        for _ in range(n):
            started += 1
            body = workflow(spec)
            body["metadata"] |= {"name": f"wf-{started}", "uid": f"0b5e7c1a-0000-4000-8000-{started:012d}"}
            for _ in range(20):
                if (await reconciler.reconcile(body, cat)).finished:
                    break
                cluster.kubelet()
                cluster.now += 1.0
            reconciler.forget(body["metadata"]["uid"])

    await runs(80)
    assert "Drifting" not in {c["type"] for c in cluster.kube.resources[("agents", "team", "writer")]["status"]
                              ["conditions"]}
    failure_rate = 0.7
    await runs(30)
    conditions = {c["type"]: c for c in cluster.kube.resources[("agents", "team", "writer")]["status"]["conditions"]}
    assert conditions["Drifting"]["status"] == "True"
    assert "failure of PromptVersion summarize-v2" in conditions["Drifting"]["message"]
    assert any(e["reason"] == "Drifting" and e["involvedObject"]["kind"] == "Agent" for e in cluster.kube.events)
    assert metrics.registry.get_sample_value("agentflow_quality_observations_total", {
        "namespace": "team", "agent": "writer", "prompt": "summarize-v2"}) == 110
