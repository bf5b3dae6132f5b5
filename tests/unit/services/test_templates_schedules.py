"""Workflows from templates in the reconciler (resolved once, pinned in the status), and WorkflowSchedules
starting them (ScheduleSync against the shipped FakeKube, in virtual time)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from agentflow.models import Catalog, WorkflowTemplate, parse_resource
from agentflow.services.errors import InvalidWorkflow, MissingReferences
from agentflow.services.schedules import ScheduleSync
from agentflow.testing import FakeKube

from .test_reconcile import Cluster, catalog, workflow

TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "digest", "namespace": "team", "uid": "t-1", "generation": 3, "resourceVersion": "77"},
    "spec": {"inputs": {"topic": "incidents"},
             "inputSchema": {"type": "object", "properties": {"topic": {"type": "string"}},
                             "additionalProperties": False},
             "steps": [{"name": "draft", "kind": "tool", "tool": "echo", "inputs": {"t": "${{ inputs.topic }}"}}]},
}


def with_template(body: dict[str, Any] = TEMPLATE) -> Catalog:
    c = catalog()
    template = parse_resource(body)
    assert isinstance(template, WorkflowTemplate)
    c.add(template)
    return c


async def test_a_workflow_from_a_template_runs_and_records_the_template_it_ran() -> None:
    c = Cluster()
    body = workflow({"workflowTemplateRef": {"name": "digest"}, "inputs": {"topic": "upgrades"}})
    c.kube.add_resource(body)
    outcome = None
    for _ in range(20):
        outcome = await c.reconciler.reconcile(body, with_template())
        if outcome.finished:
            break
        c.kubelet()
        c.now += 1.0
    assert outcome is not None and outcome.phase == "Succeeded"
    assert [node for node, _ in c.executions] == ["draft"]
    status = c.kube.resources[("workflows", "team", "wf")]["status"]
    assert status["workflowTemplate"] == {"name": "digest", "kind": "WorkflowTemplate", "uid": "t-1", "generation": 3,
                                          "resourceVersion": "77"}
    assert status["templateSpec"]["inputs"] == {"topic": "upgrades"}


async def test_a_later_edit_of_the_template_does_not_change_a_started_run() -> None:
    c = Cluster()
    body = workflow({"workflowTemplateRef": {"name": "digest"}})
    c.kube.add_resource(body)
    await c.reconciler.reconcile(body, with_template())
    edited = copy.deepcopy(TEMPLATE)
    edited["spec"]["steps"] = [{"name": "rewritten", "kind": "tool", "tool": "echo"}]
    c.reconciler = c.new_reconciler()  # an operator restart: the run is loaded again from the cluster
    c.kubelet()
    stored = c.kube.resources[("workflows", "team", "wf")]
    for _ in range(20):
        outcome = await c.reconciler.reconcile(stored, with_template(edited))
        if outcome.finished:
            break
        c.kubelet()
        c.now += 1.0
    assert outcome.phase == "Succeeded"
    assert [node for node, _ in c.executions] == ["draft"]


async def test_an_unknown_template_waits_and_inputs_that_do_not_fit_fail() -> None:
    c = Cluster()
    with pytest.raises(MissingReferences, match="unknown WorkflowTemplate 'digest'"):
        await c.reconciler.reconcile(workflow({"workflowTemplateRef": {"name": "digest"}}), catalog())
    bad = workflow({"workflowTemplateRef": {"name": "digest"}, "inputs": {"colour": "red"}})
    with pytest.raises(InvalidWorkflow, match=r"spec\.inputs\.colour: WorkflowTemplate 'digest' has no input"):
        await c.reconciler.reconcile(bad, with_template())
    assert not c.kube.pods


# --- schedules ------------------------------------------------------------------------------------------------


def schedule_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowSchedule",
            "metadata": {"name": "hourly", "namespace": "team", "uid": "s-1", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"schedule": "0 * * * *", "workflowTemplateRef": {"name": "digest"},
                     "inputs": {"topic": "alerts"}, **spec}}


def at(hour: int, minute: int = 0, second: int = 5) -> dt.datetime:
    return dt.datetime(2026, 1, 1, hour, minute, second, tzinfo=dt.UTC)


def finish(kube: FakeKube, name: str, phase: str) -> None:
    kube.resources[("workflows", "team", name)]["status"] = {"phase": phase}


async def current(kube: FakeKube) -> dict[str, Any]:
    return await kube.get_resource("workflowschedules", "team", "hourly")


async def test_a_schedule_starts_each_slot_once_even_across_restarts() -> None:
    kube = FakeKube(schedule_body())
    status = await ScheduleSync(kube).sync(await current(kube), at(1))
    assert kube.resources_created == ["workflows/hourly-29453820"]
    created = kube.resources[("workflows", "team", "hourly-29453820")]
    assert created["spec"] == {"workflowTemplateRef": {"name": "digest"}, "inputs": {"topic": "alerts"}}
    assert status["active"] == [{"name": "hourly-29453820", "scheduledTime": "2026-01-01T01:00:00Z"}]
    assert status["lastScheduleTime"] == "2026-01-01T01:00:00Z"
    assert status["nextScheduleTime"] == "2026-01-01T02:00:00Z"
    await ScheduleSync(kube).sync(await current(kube), at(1, 0, 15))  # the next tick, or a restarted operator
    kube.resources[("workflowschedules", "team", "hourly")].pop("status")  # even with its status lost
    await ScheduleSync(kube).sync(await current(kube), at(1, 30))
    assert kube.resources_created == ["workflows/hourly-29453820"]


async def test_a_schedule_of_a_cluster_template_starts_runs_naming_its_kind() -> None:
    """The run a schedule starts names the ClusterWorkflowTemplate; the reconciler resolves it, with the Agents and
    ToolPolicies of the schedule's namespace (the catalog), and records the kind."""
    kube = FakeKube(schedule_body(workflowTemplateRef={"name": "shared", "kind": "ClusterWorkflowTemplate"}))
    await ScheduleSync(kube).sync(await current(kube), at(1))
    created = kube.resources[("workflows", "team", "hourly-29453820")]
    assert created["spec"]["workflowTemplateRef"] == {"name": "shared", "kind": "ClusterWorkflowTemplate"}
    c = Cluster()
    shared = {**TEMPLATE, "kind": "ClusterWorkflowTemplate", "metadata": {"name": "shared", "uid": "c-1"}}
    namespace = catalog()
    namespace.add(parse_resource(shared))  # type: ignore[arg-type]
    body = workflow(created["spec"])
    c.kube.add_resource(body)
    outcome = None
    for _ in range(20):
        outcome = await c.reconciler.reconcile(body, namespace)
        if outcome.finished:
            break
        c.kubelet()
        c.now += 1.0
    assert outcome is not None and outcome.phase == "Succeeded"
    status = c.kube.resources[("workflows", "team", "wf")]["status"]
    assert status["workflowTemplate"] == {"name": "shared", "kind": "ClusterWorkflowTemplate", "uid": "c-1"}
    assert status["templateSpec"]["inputs"] == {"topic": "alerts"}
    with pytest.raises(MissingReferences, match=r"unknown ClusterWorkflowTemplate 'shared'.*there is a Workflow"
                                                "Template 'shared'"):
        await Cluster().reconciler.reconcile(workflow(created["spec"]), with_template(
            {**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "name": "shared"}}))


async def test_replace_cancels_the_running_one_and_history_is_bounded() -> None:
    kube = FakeKube(schedule_body(concurrencyPolicy="Replace", successfulJobsHistoryLimit=1))
    sync = ScheduleSync(kube)
    await sync.sync(await current(kube), at(1))
    await sync.sync(await current(kube), at(2))
    assert kube.resources[("workflows", "team", "hourly-29453820")]["spec"]["cancel"] is True
    finish(kube, "hourly-29453820", "Succeeded")
    finish(kube, "hourly-29453880", "Succeeded")
    status = await sync.sync(await current(kube), at(3))
    assert kube.resources_deleted == ["workflows/hourly-29453820"]
    assert status["active"] == [{"name": "hourly-29453940", "scheduledTime": "2026-01-01T03:00:00Z"}]


async def test_forbid_and_suspend_start_nothing_and_say_why() -> None:
    kube = FakeKube(schedule_body(concurrencyPolicy="Forbid"))
    sync = ScheduleSync(kube)
    await sync.sync(await current(kube), at(1))
    status = await sync.sync(await current(kube), at(2))
    assert "still running (concurrencyPolicy Forbid)" in status["message"]
    assert len(kube.resources_created) == 1
    kube.resources[("workflowschedules", "team", "hourly")]["spec"]["suspend"] = True
    status = await sync.sync(await current(kube), at(3))
    assert status["message"] == "suspended" and status["nextScheduleTime"] is None
    assert len(kube.resources_created) == 1
