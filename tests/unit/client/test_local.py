"""The local client: the local runner on manifests, started from a template with inputs, followed through its
journal. Real runs (offline model, builtin tools) in a temp folder; nothing touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentflow.client import (
    AsyncLocalClient,
    ClientError,
    InputError,
    LocalClient,
    RunFailed,
    RunNotFound,
    TemplateNotFound,
    Timeout,
)
from agentflow.runner.store import RunStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"
DIGEST = EXAMPLES / "scheduled-digest.yaml"
OFFLINE = {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}

TOOLS = """
apiVersion: agentflow.dev/v1alpha1
kind: WorkflowTemplate
metadata: {name: lookup}
spec:
  inputSchema:
    type: object
    properties: {path: {type: string}, document: {type: object}}
  inputs: {document: {a: {b: 1}}}
  steps:
    - name: fetch
      kind: tool
      tool: echo
      inputs: {document: "${{ inputs.document }}"}
    - name: extract
      kind: tool
      tool: extract
      dependsOn: [fetch]
      inputs: {document: "${{ steps.fetch.output.document }}", path: "${{ inputs.path }}"}
  outputs: {value: steps.extract.output}
---
apiVersion: agentflow.dev/v1alpha1
kind: ClusterWorkflowTemplate
metadata: {name: gated}
spec:
  steps:
    - name: review
      kind: approval
      approval: {message: "Go?"}
    - name: after
      kind: tool
      tool: echo
      dependsOn: [review]
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tools}
spec:
  tools:
    - name: echo
      builtin: {name: echo}
    - name: extract
      builtin: {name: json-extract}
"""


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(TOOLS)
    return path


async def test_a_run_of_the_examples_template_streams_its_progress_and_gives_its_outputs(tmp_path: Path) -> None:
    """examples/manifests/scheduled-digest.yaml's WorkflowTemplate, as an application starts it: no YAML of its own;
    the file's own Workflow (digest-now) is not what runs."""
    async with AsyncLocalClient([DIGEST], state_dir=tmp_path / "state", env=OFFLINE) as client:
        handle = await client.start("digest", {"topic": "database upgrades", "audience": "leadership"})
        events = [str(e) async for e in handle.events(timeout=60)]
        result = await handle.wait(timeout=60)
    assert events[-1] == "run Running -> Succeeded"
    assert [e for e in events if e.startswith("step")][-1].endswith("-> Succeeded")
    assert result.succeeded and set(result.outputs or {}) == {"digest"}
    assert "database upgrades for leadership" in str((result.outputs or {})["digest"])
    assert result.steps["draft"].phase == "Succeeded" and result.tokens > 0
    # The run is an ordinary local run: the CLI, `agentflow events` and the console see it.
    [info] = RunStore(tmp_path / "state").list_runs()
    assert info.run_id == handle.name and info.workflow == "digest"


async def test_bad_inputs_and_unknown_templates_are_named_before_a_run_is_created(tmp_path: Path) -> None:
    async with AsyncLocalClient([DIGEST], state_dir=tmp_path, env=OFFLINE) as client:
        with pytest.raises(InputError) as short:
            await client.start("digest", {"topic": "ab"})
        assert short.value.field == "topic" and "too short" in str(short.value)
        with pytest.raises(InputError) as enum:
            await client.start("digest", {"audience": "everyone"})
        assert enum.value.field == "audience"
        with pytest.raises(TemplateNotFound) as missing:
            await client.start("digets", {})
        assert str(missing.value) == "unknown WorkflowTemplate 'digets'; WorkflowTemplates: digest"
        with pytest.raises(TemplateNotFound, match="remove kind"):  # asked as a cluster one: the namespaced one hinted
            await client.start("digest", {}, kind="ClusterWorkflowTemplate")
        with pytest.raises(ValueError, match=r"^name: 'Digest Now' is not a Workflow name"):
            await client.start("digest", {}, name="Digest Now")
        with pytest.raises(RunNotFound):
            await client.get("nope")
    assert RunStore(tmp_path).list_runs() == []


async def test_manifests_that_do_not_validate_are_a_client_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(DIGEST.read_text().replace("agentRef: {name: digest-writer}", "agentRef: {name: ghost}"))
    async with AsyncLocalClient([broken], state_dir=tmp_path, env=OFFLINE) as client:
        with pytest.raises(ClientError, match="unknown Agent 'ghost'"):
            await client.start("digest", {})
    with pytest.raises(TypeError, match="wrap it in a list"):
        AsyncLocalClient(broken)  # type: ignore[arg-type]


async def test_a_failed_step_is_named(tools: Path, tmp_path: Path) -> None:
    async with AsyncLocalClient([tools], state_dir=tmp_path, env=OFFLINE) as client:
        assert await (await client.start("lookup", {"path": "a.b"})).outputs(timeout=30) == {"value": 1}
        handle = await client.start("lookup", {"path": "a.c"})
        with pytest.raises(RunFailed) as failed:
            await handle.wait(timeout=30)
    assert (failed.value.step, failed.value.phase) == ("extract", "Failed")
    assert "c" in failed.value.message and failed.value.result.steps["fetch"].phase == "Succeeded"


async def test_a_run_waiting_for_a_human_times_out_and_can_be_cancelled(tools: Path, tmp_path: Path) -> None:
    """A ClusterWorkflowTemplate of the manifests, with an approval step: wait() gives up (the run goes on), a
    cancel ends it."""
    async with AsyncLocalClient([tools], state_dir=tmp_path, env=OFFLINE) as client:
        handle = await client.start("gated", kind="ClusterWorkflowTemplate", name="gated-run")
        with pytest.raises(Timeout) as slow:
            await handle.wait(timeout=0.5)
        assert slow.value.result.steps["review"].phase == "Waiting"
        await handle.cancel("not today")
        with pytest.raises(RunFailed) as cancelled:
            await handle.wait(timeout=30)
    assert cancelled.value.phase == "Cancelled" and "not today" in cancelled.value.message


async def test_a_run_no_longer_driven_is_said_not_waited_for(tools: Path, tmp_path: Path) -> None:
    client = AsyncLocalClient([tools], state_dir=tmp_path, env=OFFLINE)
    handle = await client.start("gated", kind="ClusterWorkflowTemplate")
    await client.aclose()
    with pytest.raises(ClientError, match=rf"no longer driven .it was stopped.; its journal is kept: agentflow resume "
                                          f"{handle.name}"):
        await handle.wait(timeout=30)


def test_the_blocking_local_client_drives_runs_in_its_own_thread(tools: Path, tmp_path: Path) -> None:
    with LocalClient([tools], state_dir=tmp_path, env=OFFLINE) as client:
        handle = client.start("lookup", {"path": "a"})
        phases = [e.phase for e in handle.events(timeout=30) if e.kind == "run"]
        assert phases[-1] == "Succeeded"
        assert handle.outputs(timeout=30) == {"value": {"b": 1}}
        again = client.get(handle.name[:-2])  # a unique prefix of the run id
        assert again.result().succeeded
    with pytest.raises(ClientError, match="closed"):
        handle.result()
