"""Workflow steps run by the local runner: each attempt is a child run of the template (same manifests, same
engine, the same state directory), its outputs back in the parent and its cost in the parent's; a failed child is
retried with a new child, a resumed parent resumes its child instead of starting another, cancelling the parent
cancels the child, and nesting stops at the depth limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.values import CallRecord, Executor, StepError, StepRequest, StepResult
from agentflow.runner import session
from agentflow.runner.store import RunDir, RunStore
from agentflow.runner.subworkflows import SubWorkflowExecutor, child_run_id

MANIFESTS = """\
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tools}
spec:
  tools:
  - {name: echo, builtin: {name: echo}}
---
apiVersion: agentflow.dev/v1alpha1
kind: WorkflowTemplate
metadata: {name: leaf}
spec:
  inputs: {topic: x}
  steps:
  - {name: say, kind: tool, tool: echo, inputs: {text: "${{ inputs.topic }}"}}
  outputs:
    said: steps.say.output.text
---
apiVersion: agentflow.dev/v1alpha1
kind: WorkflowTemplate
metadata: {name: middle}
spec:
  inputs: {topic: x}
  steps:
  - {name: inner, kind: workflow, workflowTemplateRef: {name: leaf}, inputs: {topic: "${{ inputs.topic }}"}}
  outputs:
    said: steps.inner.output.said
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: parent, labels: {team: reports}}
spec:
  inputs: {topic: hello}
  steps:
  - name: sub
    kind: workflow
    workflowTemplateRef: {name: TEMPLATE}
    inputs: {topic: "${{ inputs.topic }} world"}
    retry: {limit: RETRIES, backoff: {initialSeconds: 0, jitter: 0}}
  - {name: after, kind: tool, tool: echo, dependsOn: [sub], inputs: {got: "${{ steps.sub.output.said }}"}}
"""

class Priced:
    """Every tool attempt of every run echoes its inputs at 0.25 USD; ``fail`` runs fail instead."""

    def __init__(self, fail: Callable[[StepRequest], bool] = lambda r: False, block: bool = False) -> None:
        self.fail = fail
        self.block = block
        self.seen: list[tuple[str, str, int]] = []
        self.started = asyncio.Event()

    def executor(self) -> Executor:
        outer = self

        class One:
            async def execute(self, request: StepRequest) -> StepResult:
                outer.seen.append((request.run_id, request.node, request.attempt))
                call = (CallRecord("llm", "m", "h", "x", input_tokens=10, output_tokens=5, cost_usd=0.25),)
                if outer.block and request.node == "say":
                    outer.started.set()
                    await asyncio.Event().wait()
                if outer.fail(request):
                    return StepResult(error=StepError("Boom", "it broke"), calls=call)
                return StepResult(output=dict(request.inputs), calls=call)

        return One()


def setup(tmp_path: Path, template: str = "leaf", retries: int = 0) -> tuple[session.Bundle, RunDir, Path]:
    path = tmp_path / "wf.yaml"
    path.write_text(MANIFESTS.replace("TEMPLATE", template).replace("RETRIES", str(retries)))
    bundle = session.load_bundle([path])
    state = tmp_path / "state"
    run_dir = session.create_run(RunStore(state), bundle, [path])
    return bundle, run_dir, state


def executor(bundle: session.Bundle, state: Path, fake: Priced, max_depth: int = 5, depth: int = 0) -> Executor:
    def child(child_bundle: session.Bundle, child_depth: int) -> Executor:
        return executor(child_bundle, state, fake, max_depth, child_depth)

    if not session.has_workflow_steps(bundle.workflow.spec):
        return fake.executor()
    return SubWorkflowExecutor(fake.executor(), bundle, child, state_dir=state, depth=depth, max_depth=max_depth)


def journal(state: Path, run_id: str) -> list[dict[str, Any]]:
    path = state / "runs" / run_id / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_workflow_step_runs_its_template_as_a_child_run_with_outputs_and_cost_back(tmp_path: Path) -> None:
    bundle, run_dir, state = setup(tmp_path)
    run = await session.drive(run_dir, bundle, executor(bundle, state, fake := Priced()))
    assert run.phase == "Succeeded" and run.outputs == {"after": {"got": "hello world"}}
    child = child_run_id(run.run_id, "sub", 1)
    assert sorted(p.name for p in (state / "runs").iterdir()) == sorted([run.run_id, child])
    assert [(r, n) for r, n, _ in fake.seen] == [(child, "say"), (run.run_id, "after")]
    assert run.nodes["sub"].cost_usd == 0.25 and run.cost_usd == 0.5  # the child's step, then the parent's own
    assert run.nodes["sub"].tokens == 15 and run.tokens == 30  # its tokens too
    finished = journal(state, child)[-1]
    assert finished["type"] == "RunFinished" and finished["data"]["outputs"] == {"said": "hello world"}
    manifests = (state / "runs" / child / "manifests.yaml").read_text()
    assert f"agentflow.dev/parent-run: {run.run_id}" in manifests and "agentflow.dev/depth: '1'" in manifests
    assert "team: reports" in manifests  # the parent's labels: Budgets selecting its runs select the child


async def test_a_failed_child_is_retried_with_a_new_child_per_attempt(tmp_path: Path) -> None:
    bundle, run_dir, state = setup(tmp_path, retries=1)
    fake = Priced(fail=lambda r: r.node == "say")
    run = await session.drive(run_dir, bundle, executor(bundle, state, fake))
    assert run.phase == "Failed"
    node = run.nodes["sub"]
    assert node.attempt == 2 and node.error is not None and node.error.type == "SubWorkflowFailed"
    assert child_run_id(run.run_id, "sub", 2) in node.error.message and "it broke" in node.error.message
    children = {child_run_id(run.run_id, "sub", a) for a in (1, 2)}
    assert {p.name for p in (state / "runs").iterdir()} == {run.run_id, *children}
    assert run.cost_usd == 0.5  # both children's failed steps


async def test_a_resumed_parent_resumes_its_child_and_starts_no_second_one(tmp_path: Path) -> None:
    bundle, run_dir, state = setup(tmp_path)
    fake = Priced(block=True)
    task = asyncio.create_task(session.drive(run_dir, bundle, executor(bundle, state, fake)))
    await asyncio.wait_for(fake.started.wait(), 10)
    task.cancel()  # the process dies while the child's step runs; the parent is resumed later
    with pytest.raises(asyncio.CancelledError):
        await task
    child = child_run_id(run_dir.run_id, "sub", 1)
    assert journal(state, child)[-1]["type"] != "RunFinished"  # stopped, not cancelled: it resumes
    fake.block = False
    run = await session.drive(RunStore(state).open(run_dir.run_id), bundle, executor(bundle, state, fake))
    assert run.phase == "Succeeded" and run.outputs == {"after": {"got": "hello world"}}
    assert {p.name for p in (state / "runs").iterdir()} == {run.run_id, child}
    assert [n for r, n, _ in fake.seen if r == child] == ["say", "say"]  # the interrupted attempt, run again
    assert [r["type"] for r in journal(state, child)].count("RunStarted") == 1


async def test_cancelling_the_parent_cancels_its_running_child(tmp_path: Path) -> None:
    bundle, run_dir, state = setup(tmp_path)
    fake = Priced(block=True)
    task = asyncio.create_task(session.drive(run_dir, bundle, executor(bundle, state, fake)))
    await asyncio.wait_for(fake.started.wait(), 10)
    session.post_cancel(run_dir, "alice", "not needed")
    run = await asyncio.wait_for(task, 10)
    assert run.phase == "Cancelled"
    child = journal(state, child_run_id(run.run_id, "sub", 1))
    assert child[-1]["type"] == "RunFinished" and child[-1]["data"]["phase"] == "Cancelled"
    cancel = next(r for r in child if r["type"] == "CancelRequested")
    assert cancel["data"]["by"] == f"run {run.run_id}"


async def test_nesting_stops_at_the_depth_limit(tmp_path: Path) -> None:
    bundle, run_dir, state = setup(tmp_path, template="middle")
    run = await session.drive(run_dir, bundle, executor(bundle, state, Priced(), max_depth=1))
    assert run.phase == "Failed"
    error = run.nodes["sub"].error
    assert error is not None and error.type == "SubWorkflowFailed" and "WorkflowDepthExceeded" in error.message
    again = session.create_run(RunStore(state), bundle, [])
    deeper = await session.drive(again, bundle, executor(bundle, state, Priced(), max_depth=2))
    assert deeper.phase == "Succeeded" and deeper.outputs == {"after": {"got": "hello world"}}


def test_agentflow_run_runs_workflow_steps_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from agentflow.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    (tmp_path / "wf.yaml").write_text(MANIFESTS.replace("TEMPLATE", "middle").replace("RETRIES", "0"))
    code = main(["--state-dir", str(tmp_path / "state"), "run", "wf.yaml", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["outputs"] == {"after": {"got": "hello world"}}
    assert len(list((tmp_path / "state" / "runs").iterdir())) == 3  # the parent, its child, the child's child
    code = main(["--state-dir", str(tmp_path / "state"), "run", "wf.yaml", "--json", "--max-workflow-depth", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code != 0 and out["phase"] == "Failed"


def test_the_loader_names_a_bad_reference_and_a_bad_input(tmp_path: Path) -> None:
    text = MANIFESTS.replace("TEMPLATE", "lief").replace("RETRIES", "0")
    (tmp_path / "bad.yaml").write_text(text.replace("inputs: {topic: \"${{ inputs.topic }} world\"}",
                                                    "inputs: {topik: 1}"))
    with pytest.raises(Exception) as caught:
        session.load_bundle([tmp_path / "bad.yaml"])
    problems = {p.path: p.message for p in caught.value.problems}  # type: ignore[attr-defined]
    assert problems["spec.steps[0].workflowTemplateRef.name"].startswith("unknown WorkflowTemplate 'lief'")


def test_child_run_ids_are_valid_distinct_and_stable() -> None:
    ids = {child_run_id("parent-20260101-000000-abcd", node, attempt) for node in ("a", "a[1]", "s#2", "x/t1")
           for attempt in (1, 2)}
    assert len(ids) == 8
    assert child_run_id("r", "a[1]", 1) == child_run_id("r", "a[1]", 1)
    long = child_run_id("r" * 200, "n" * 200, 3)
    assert len(long) <= 200

