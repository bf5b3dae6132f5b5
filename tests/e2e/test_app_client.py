"""The application client on a real cluster: a run of a template started with inputs (no YAML), its progress
streamed from the Workflow's status, its outputs the local client's for the same template and inputs; a
ClusterWorkflowTemplate used from a namespace, resolving the Agents of that namespace; bad inputs refused before
anything is created. Not run in the unit tier (pytest -m e2e, a cluster)."""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import Any

import pytest

from agentflow.client import AsyncClient, InputError, LocalClient, RunEvent, TemplateNotFound

from .conftest import Cluster
from .test_operator import (
    REPO,
    Operator,
    load_manifests,
)

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples/manifests/scheduled-digest.yaml"
INPUTS = {"topic": "database upgrades", "audience": "leadership"}


def supporting() -> list[dict[str, Any]]:
    """The template, its Agent and PromptVersion: not the file's own Workflow or schedule."""
    return [d for d in load_manifests(EXAMPLE) if d["kind"] not in ("Workflow", "WorkflowSchedule")]


def local_outputs(tmp_path: Path) -> Any:
    with LocalClient([EXAMPLE], state_dir=tmp_path, env={**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}) as local:
        return local.start("digest", INPUTS).outputs(timeout=300)


async def follow(client: AsyncClient, template: str, kind: str) -> tuple[str, list[RunEvent], Any]:
    handle = await client.start(template, INPUTS, kind=kind)  # type: ignore[arg-type]
    events = [event async for event in handle.events(timeout=300)]
    result = await handle.wait(timeout=60)
    return handle.name, events, result


def test_a_run_started_by_the_client_streams_and_gives_the_local_runs_outputs(
        cluster: Cluster, operator: Operator, op_namespace: str, tmp_path: Path) -> None:
    cluster.apply(supporting(), op_namespace)

    async def scenario() -> tuple[str, list[RunEvent], Any]:
        async with AsyncClient(op_namespace, kubeconfig=cluster.kubeconfig, poll_seconds=0.5) as client:
            with pytest.raises(InputError) as refused:
                await client.start("digest", {"topic": "db"})
            assert refused.value.field == "topic"
            with pytest.raises(TemplateNotFound):
                await client.start("digest", INPUTS, kind="ClusterWorkflowTemplate")
            return await follow(client, "digest", "WorkflowTemplate")

    name, events, result = asyncio.run(scenario())
    assert result.succeeded and result.outputs == local_outputs(tmp_path)
    assert str(events[-1]).startswith("run ") and events[-1].phase == "Succeeded"
    assert any(e.kind == "step" and e.step == "draft" and e.phase == "Succeeded" for e in events)
    created = cluster.get_json("workflows.agentflow.dev", "-n", op_namespace)["items"]
    assert [w["metadata"]["name"] for w in created] == [name]  # the refused inputs created nothing
    assert created[0]["spec"]["workflowTemplateRef"] == {"name": "digest", "kind": "WorkflowTemplate"}


def test_a_cluster_template_runs_with_the_agents_of_the_workflows_namespace(
        cluster: Cluster, operator: Operator, op_namespace: str, tmp_path: Path) -> None:
    docs = supporting()
    template = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    shared = copy.deepcopy(template)
    shared["kind"] = "ClusterWorkflowTemplate"
    shared["metadata"] = {"name": f"digest-{op_namespace}"}  # cluster-scoped: one per test namespace
    cluster.apply([d for d in docs if d is not template], op_namespace)  # the Agent and PromptVersion only
    cluster.apply(shared)
    try:
        async def scenario() -> tuple[str, list[RunEvent], Any]:
            async with AsyncClient(op_namespace, kubeconfig=cluster.kubeconfig, poll_seconds=0.5) as client:
                return await follow(client, shared["metadata"]["name"], "ClusterWorkflowTemplate")

        name, _, result = asyncio.run(scenario())
        assert result.succeeded and result.outputs == local_outputs(tmp_path)
        wf = cluster.get_json("workflows.agentflow.dev", name, "-n", op_namespace)
        assert wf["status"]["workflowTemplate"]["kind"] == "ClusterWorkflowTemplate"
        assert wf["status"]["workflowTemplate"]["name"] == shared["metadata"]["name"]
    finally:
        cluster.kubectl("delete", "clusterworkflowtemplates.agentflow.dev", shared["metadata"]["name"],
                        "--ignore-not-found", check=False)
