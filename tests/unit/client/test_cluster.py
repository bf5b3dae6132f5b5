"""The cluster client against the shipped FakeKube, with the real reconciler playing the operator: a run of a
template is a Workflow naming it, checked before it is created, followed through the status the operator writes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from agentflow.client import (
    AsyncClient,
    Client,
    InputError,
    RunExists,
    RunFailed,
    RunNotFound,
    RunRefused,
    TemplateNotFound,
    Timeout,
)
from agentflow.engine.values import StepError, StepResult
from agentflow.models import Catalog, parse_resource
from agentflow.testing import FakeKube, RbacKube

from ..services.test_reconcile import Cluster, catalog

NS = "team"
TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "digest", "namespace": NS},
    "spec": {"inputs": {"topic": "incidents"},
             "inputSchema": {"type": "object", "properties": {"topic": {"type": "string", "minLength": 3}},
                             "additionalProperties": False},
             "steps": [{"name": "draft", "kind": "tool", "tool": "echo", "inputs": {"t": "${{ inputs.topic }}"}},
                       {"name": "publish", "kind": "tool", "tool": "echo", "dependsOn": ["draft"],
                        "inputs": {"text": "${{ steps.draft.output.t }}"}}],
             "outputs": {"digest": "steps.publish.output.text"}},
}
SHARED = {**TEMPLATE, "kind": "ClusterWorkflowTemplate", "metadata": {"name": "shared-digest"}}


def operator_catalog() -> Catalog:
    c = catalog()
    for body in (TEMPLATE, SHARED):
        c.add(parse_resource(body))  # type: ignore[arg-type]
    return c


@contextlib.asynccontextmanager
async def operator(cluster: Cluster) -> AsyncIterator[None]:
    """The operator, in the background: every Workflow in the namespace reconciled and its pods 'run'."""
    async def loop() -> None:
        while True:
            for (plural, ns, name), body in list(cluster.kube.resources.items()):
                if plural != "workflows" or ns != NS:
                    continue
                body["metadata"]["uid"] = f"0b5e7c1a-0000-4000-8000-{abs(hash(name)) % 10**12:012d}"
                if (body.get("status") or {}).get("phase") not in ("Succeeded", "Failed", "Cancelled"):
                    await cluster.reconciler.reconcile(copy.deepcopy(body), operator_catalog())
            cluster.kubelet()
            cluster.now += 1.0
            await asyncio.sleep(0.005)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(behaviour: Callable[[str, int, Mapping[str, Any]], StepResult | str] | None = None
          ) -> tuple[Cluster, AsyncClient]:
    cluster = Cluster(behaviour)
    cluster.kube.add_resource(TEMPLATE)
    cluster.kube.add_resource(SHARED)
    return cluster, AsyncClient(NS, kube=cluster.kube, poll_seconds=0.01)


async def test_a_run_of_a_template_is_a_workflow_giving_only_inputs_and_its_outputs_come_back() -> None:
    cluster, client = setup()
    async with operator(cluster):
        handle = await client.start("digest", {"topic": "database upgrades"}, labels={"app": "helpdesk"})
        created = cluster.kube.resources[("workflows", NS, handle.name)]
        assert handle.name.startswith("digest-") and len(handle.name) == len("digest-") + 6
        assert created["spec"] == {"workflowTemplateRef": {"name": "digest"}, "inputs": {"topic": "database upgrades"}}
        assert created["metadata"]["labels"] == {"app": "helpdesk"}
        events = [str(e) async for e in handle.events(timeout=30)]
        result = await handle.wait(timeout=30)
    assert result.succeeded and dict(result.outputs or {}) == {"digest": "database upgrades"}
    assert events[-1].startswith("run Running -> Succeeded")  # the operator's message follows
    steps = [e for e in events if e.startswith("step")]
    assert steps[0].startswith("step draft") and steps[-1].startswith("step publish")  # in the order they appeared
    assert steps[-1].endswith("-> Succeeded")
    assert (await (await client.get(handle.name)).result()).phase == "Succeeded"


async def test_a_cluster_template_is_named_with_its_kind() -> None:
    cluster, client = setup()
    async with operator(cluster):
        handle = await client.start("shared-digest", {"topic": "quarterly"}, name="q1", kind="ClusterWorkflowTemplate")
        assert cluster.kube.resources[("workflows", NS, "q1")]["spec"]["workflowTemplateRef"] == {
            "name": "shared-digest", "kind": "ClusterWorkflowTemplate"}
        assert await handle.outputs(timeout=30) == {"digest": "quarterly"}
    status = cluster.kube.resources[("workflows", NS, "q1")]["status"]
    assert status["workflowTemplate"]["kind"] == "ClusterWorkflowTemplate"


async def test_inputs_and_templates_are_checked_before_anything_is_created() -> None:
    cluster, client = setup()
    with pytest.raises(InputError) as bad:
        await client.start("digest", {"topic": "ab"})
    assert bad.value.field == "topic" and "too short" in str(bad.value)
    with pytest.raises(InputError) as unknown:
        await client.start("digest", {"colour": "red"})
    assert unknown.value.field == "colour" and "has no input 'colour'" in str(unknown.value)
    with pytest.raises(TemplateNotFound) as missing:
        await client.start("shared-digest", {})  # a ClusterWorkflowTemplate, asked for as a namespaced one
    assert (missing.value.template, missing.value.kind) == ("shared-digest", "WorkflowTemplate")
    assert str(missing.value) == "no WorkflowTemplate 'shared-digest' in namespace team"
    with pytest.raises(TemplateNotFound, match="no ClusterWorkflowTemplate 'digest' in the cluster"):
        await client.start("digest", {}, kind="ClusterWorkflowTemplate")
    with pytest.raises(ValueError, match="kind: expected WorkflowTemplate or ClusterWorkflowTemplate"):
        await client.start("digest", {}, kind="Template")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^name: 'Not A Name' is not a Workflow name: String should match pattern"):
        await client.start("digest", {}, name="Not A Name")
    assert cluster.kube.resources_created == []


async def test_a_failed_step_is_named_and_a_slow_run_times_out() -> None:
    def behaviour(node: str, attempt: int, inputs: Mapping[str, Any]) -> StepResult:
        if node == "publish":
            return StepResult(error=StepError("ToolError", "the printer is on fire", retryable=False))
        return StepResult(output=dict(inputs))

    cluster, client = setup(behaviour)
    handle = await client.start("digest", {"topic": "fires"})
    with pytest.raises(Timeout) as slow:  # nobody drives it yet
        await handle.wait(timeout=0.05)
    assert slow.value.result.phase == "Pending" and isinstance(slow.value, TimeoutError)
    async with operator(cluster):
        with pytest.raises(RunFailed) as failed:
            await handle.wait(timeout=30)
    assert (failed.value.step, failed.value.phase) == ("publish", "Failed")
    assert "the printer is on fire" in failed.value.message


async def test_a_run_is_cancelled_through_spec_cancel() -> None:
    cluster, client = setup()
    handle = await client.start("digest", {"topic": "stop me"})
    await handle.cancel("changed my mind")
    assert cluster.kube.resources[("workflows", NS, handle.name)]["spec"]["cancel"] is True
    async with operator(cluster):
        with pytest.raises(RunFailed) as stopped:
            await handle.wait(timeout=30)
    assert stopped.value.phase == "Cancelled"


async def test_what_the_cluster_refuses_is_a_run_refused() -> None:
    cluster, client = setup()
    await client.start("digest", {}, name="once")
    with pytest.raises(RunExists, match=r"name: a Workflow .* exists already") as taken:
        await client.start("digest", {}, name="once")
    assert taken.value.name == "once" and isinstance(taken.value, RunRefused)
    reader = AsyncClient(NS, kube=RbacKube(cluster.kube, "ada", {("get", "workflowtemplates")}))  # type: ignore[arg-type]
    with pytest.raises(RunRefused, match="403 Forbidden"):
        await reader.start("digest", {})
    with pytest.raises(RunNotFound, match="no Workflow 'ghost' in namespace team"):
        await client.get("ghost")


def test_the_blocking_client_does_the_same_from_code_without_a_loop() -> None:
    cluster, _ = setup()
    with Client(NS, kube=cluster.kube, poll_seconds=0.01) as client:
        handle = client.start("digest", {"topic": "blocking"})
        assert handle.result().phase == "Pending"
        client.template("shared-digest", "ClusterWorkflowTemplate")
        with pytest.raises(Timeout):
            handle.wait(timeout=0.05)
    with pytest.raises(ValueError, match="namespace: required with kube"):
        AsyncClient(kube=FakeKube())
