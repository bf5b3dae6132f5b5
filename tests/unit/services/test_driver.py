"""The driver of one Workflow: what it says on the status and in Events when a reconcile fails, in virtual time.

The FakeKube refuses pod creation the way a real API server can (an Invalid object, RBAC, the network); the
driver's sleeps jump a virtual clock instead of waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentflow.k8s.kube import Forbidden, Invalid, KubeError
from agentflow.services import driver as driver_module
from agentflow.services.driver import WorkflowDriver, classify
from agentflow.services.errors import InvalidWorkflow
from agentflow.services.metrics import Metrics
from agentflow.services.reconcile import Outcome

from .test_reconcile import Cluster, catalog, workflow

SPEC = {"steps": [{"name": "a", "kind": "tool", "tool": "echo"}]}


class Stop:
    """Falsy until told to stop (kopf's ``stopped`` flag)."""

    def __init__(self) -> None:
        self.set = False

    def __bool__(self) -> bool:
        return self.set


class Harness:
    """A driver over the Cluster fakes; ``sleeps`` records each delay, and the virtual clock moves by it."""

    def __init__(self, body: dict[str, Any], until: Any) -> None:
        self.cluster = Cluster()
        self.body = body
        self.cluster.kube.add_resource(body)
        self.driver = WorkflowDriver(self.cluster.reconciler, Metrics(), clock=lambda: self.cluster.now)
        self.stop = Stop()
        self.sleeps: list[float] = []
        self.until = until

        async def sleep(wakeup: asyncio.Event, stopped: Any, seconds: float) -> None:
            self.sleeps.append(seconds)
            self.cluster.now += seconds
            self.body["status"] = self.status  # kopf's body follows the object
            if self.until(self):
                self.stop.set = True

        self.driver._sleep = sleep  # type: ignore[method-assign]

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.cluster.kube.resources[("workflows", "team", "wf")].get("status") or {})

    def conditions(self) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.status.get("conditions") or []}

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in self.cluster.kube.events]

    def drive(self) -> None:
        asyncio.run(self.driver.drive(self.body, catalog, asyncio.Event(), self.stop))


def test_an_object_the_api_server_refuses_stalls_the_workflow_at_once_with_one_event() -> None:
    h = Harness(workflow(SPEC), until=lambda h: len(h.sleeps) >= 4)
    h.cluster.kube.fail_creates = 10
    h.cluster.kube.create_error = Invalid("create pod wf-a-1: 422 Unprocessable Entity: activeDeadlineSeconds", 422)
    h.drive()
    stalled = h.conditions()["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "APIRejected")
    assert "activeDeadlineSeconds" in stalled["message"] and "fix the Workflow's spec" in stalled["message"]
    assert h.conditions()["Reconciling"]["status"] == "False"
    assert h.status["phase"] and h.status["message"] == stalled["message"]
    assert h.events().count(("Warning", "APIRejected")) == 1  # once, not once per retry
    assert h.sleeps == [driver_module.MAX_BACKOFF_SECONDS] * 4  # permanent: the longest backoff at once
    # agentflow_runs_stalled counts it while it is driven, and no more once it is not
    assert h.driver.metrics.registry.get_sample_value("agentflow_runs_stalled") == 0


def test_the_stalled_gauge_counts_a_stalled_workflow_until_it_recovers() -> None:
    seen: list[float | None] = []

    def until(h: Harness) -> bool:
        seen.append(h.driver.metrics.registry.get_sample_value("agentflow_runs_stalled"))
        return h.conditions().get("Stalled", {}).get("status") == "False" or len(h.sleeps) > 20

    h = Harness(workflow(SPEC), until=until)
    h.cluster.kube.fail_creates = 2
    h.cluster.kube.create_error = Forbidden("create pod wf-a-1: 403 Forbidden (check the operator's RBAC)", 403)
    h.drive()
    assert 1.0 in seen
    assert h.driver.metrics.registry.get_sample_value("agentflow_runs_stalled") == 0


def test_a_stall_clears_when_the_reconcile_gets_through_again() -> None:
    h = Harness(workflow(SPEC), until=lambda h: h.conditions().get("Stalled", {}).get("status") == "False"
                or len(h.sleeps) > 20)
    h.cluster.kube.fail_creates = 2
    h.cluster.kube.create_error = Forbidden("create pod wf-a-1: 403 Forbidden (check the operator's RBAC)", 403)
    h.drive()
    assert h.conditions()["Stalled"]["status"] == "False"
    assert h.status["phase"] == "Running"
    assert h.events().count(("Warning", "Forbidden")) == 1
    assert ("Normal", "Recovered") in h.events()


def test_transient_errors_are_said_after_the_failures_in_a_row_and_retried_with_backoff() -> None:
    limit = driver_module.STALL_AFTER_FAILURES
    h = Harness(workflow(SPEC), until=lambda h: len(h.sleeps) >= limit + 2)
    h.cluster.kube.fail_creates = 100
    h.drive()  # FakeKube's default create error: a KubeError (connection reset), retryable
    assert h.sleeps[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(h.sleeps) <= driver_module.MAX_BACKOFF_SECONDS
    stalled = h.conditions()["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "APIUnavailable")
    assert f"{limit} failed reconcile(s)" in stalled["message"]
    assert h.events().count(("Warning", "APIUnavailable")) == 1


def test_transient_errors_say_nothing_before_the_threshold() -> None:
    h = Harness(workflow(SPEC), until=lambda h: len(h.sleeps) >= driver_module.STALL_AFTER_FAILURES - 1)
    h.cluster.kube.fail_creates = 100
    h.drive()
    assert h.conditions().get("Stalled", {}).get("status") != "True"
    assert not [e for e in h.events() if e[0] == "Warning"]


def test_an_invalid_spec_fails_the_workflow_for_good_and_says_so() -> None:
    body = workflow({"steps": [{"name": "a", "kind": "tool", "tool": "echo", "dependsOn": ["zz"]}]})
    h = Harness(body, until=lambda h: True)
    with pytest.raises(InvalidWorkflow):
        h.drive()
    assert h.status["phase"] == "Failed"
    assert h.conditions()["Stalled"]["reason"] == "InvalidSpec" and "zz" in h.status["message"]
    assert ("Warning", "InvalidSpec") in h.events()


@pytest.mark.parametrize(("error", "reason", "permanent"), [
    (Invalid("x", 422), "APIRejected", True), (Forbidden("x", 403), "Forbidden", True),
    (KubeError("x", 503), "APIUnavailable", False), (ValueError("x"), "ReconcileError", True),
])
def test_errors_are_classified(error: Exception, reason: str, permanent: bool) -> None:
    trouble = classify(error)
    assert (trouble.reason, trouble.permanent) == (reason, permanent)


class GatedReconciler:
    """A reconciler whose reconciles wait for the test to let them through; it records who ran in which order."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.order: list[str] = []
        self.gate = asyncio.Event()
        self.runs: dict[str, Any] = {}
        self.forgotten: list[str] = []

    async def reconcile(self, body: dict[str, Any], catalog: Any) -> Outcome:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.order.append(body["metadata"]["name"])
        try:
            await self.gate.wait()
            if body["metadata"]["name"] == "wf-2" and self.order.count("wf-2") == 1:
                raise KubeError("the API server went away")  # a failure gives its slot back too
        finally:
            self.in_flight -= 1
        return Outcome("Succeeded", True, None)

    def forget(self, uid: str) -> None:
        self.forgotten.append(uid)


async def test_at_most_max_concurrent_reconciles_run_at_once_and_the_rest_wait_in_arrival_order() -> None:
    metrics = Metrics()
    reconciler = GatedReconciler()
    driver = WorkflowDriver(reconciler, metrics, max_concurrent=3)  # type: ignore[arg-type]
    driver._sleep = lambda *_: asyncio.sleep(0)  # type: ignore[method-assign,assignment,return-value]
    driver._failed = lambda *_: asyncio.sleep(0, 0.0)  # type: ignore[method-assign,assignment,return-value]
    bodies = [workflow(SPEC) for _ in range(20)]
    for i, body in enumerate(bodies):
        body["metadata"].update(name=f"wf-{i}", uid=f"uid-{i}")
    tasks = [asyncio.create_task(driver.drive(b, catalog, asyncio.Event(), Stop())) for b in bodies]
    for _ in range(10):
        await asyncio.sleep(0)
    assert reconciler.in_flight == 3 and reconciler.order == ["wf-0", "wf-1", "wf-2"]
    assert metrics.registry.get_sample_value("agentflow_reconciles_waiting") == 17
    reconciler.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert reconciler.most == 3
    assert reconciler.order[:20] == [f"wf-{i}" for i in range(20)]  # first come, first served
    assert reconciler.order[20:] == ["wf-2"]  # the failed one, again
    assert sorted(reconciler.forgotten) == sorted(f"uid-{i}" for i in range(20))
    assert metrics.registry.get_sample_value("agentflow_reconciles_waiting") == 0
    assert metrics.registry.get_sample_value("agentflow_reconcile_seconds_count") == 20  # the failed pass is not


def test_max_concurrent_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_concurrent: at least 1, got 0"):
        WorkflowDriver(GatedReconciler(), Metrics(), max_concurrent=0)  # type: ignore[arg-type]
