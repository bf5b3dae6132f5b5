"""Local runs for the console's tests: real manifests, driven by the real runner (no model calls)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentflow.runner import session
from agentflow.runner.store import RunDir, RunStore

# Two approval steps and a fan-out of approvals: runs with no model, tool or network.
APPROVALS = """\
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata:
  name: approvals
  labels: {team: support}
spec:
  inputs: {items: [a, b, c]}
  steps:
    - name: ask
      kind: approval
      approval: {message: "go?", approvers: [alice]}
    - name: each
      kind: approval
      dependsOn: [ask]
      forEach: inputs.items
      approval: {message: "item ${{ item }}"}
    - name: done
      kind: approval
      dependsOn: [each]
      approval: {message: "finish?"}
    - name: cleanup
      kind: approval
      runOn: always
      approval: {message: "clean up?"}
"""

MACHINE = """\
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: machine}
spec:
  stateMachine:
    initial: review
    states:
      - name: review
        step: {name: review, kind: approval, approval: {message: "ok?"}}
        transitions:
          - {target: done, result: success}
          - {target: review, result: error}
      - name: done
        final: Succeeded
"""


def start(state: Path, text: str, name: str = "wf.yaml") -> RunDir:
    """A run of ``text`` driven until it waits (approval steps never finish on their own)."""
    path = state.parent / name
    path.write_text(text)
    bundle = session.load_bundle([path])
    run_dir = session.create_run(RunStore(state), bundle, [path])
    asyncio.run(drive(run_dir))
    return run_dir


async def drive(run_dir: RunDir) -> None:
    bundle = session.bundle_of(run_dir)
    await session.drive(run_dir, bundle, session.make_executor(bundle, "inprocess"), wait_for_approvals=False)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"
