"""What a model or tool answers that the journal cannot hold (a lone surrogate, NaN, a key that is not text) ends
the attempt InvalidOutput naming where; the run goes on to its end, and what the provider charged is still counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.values import CallRecord, EventType, StepRequest, StepResult
from agentflow.models import Catalog, Workflow
from agentflow.runner.session import Bundle, create_run, drive
from agentflow.runner.store import RunStore

MANIFEST = """apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: odd}
spec:
  steps:
  - {name: ask, kind: tool, tool: echo}
"""


class Answering:
    """An executor whose one answer is given."""

    def __init__(self, result: StepResult) -> None:
        self.result = result

    async def execute(self, request: StepRequest) -> StepResult:
        return self.result

    async def aclose(self) -> None:
        return None


def charged(response: Any) -> CallRecord:
    return CallRecord("llm", "openai/gpt-4o-mini", "ab" * 32, response, input_tokens=100, output_tokens=20,
                      cost_usd=0.25)


@pytest.mark.parametrize(("result", "where"), [
    (StepResult(output={"answer": "\ud800 x"}, calls=(charged("ok"),)), "output.answer: string is not valid UTF-8"),
    (StepResult(output={"answer": float("nan")}, calls=(charged("ok"),)), "output.answer: nan"),
    (StepResult(output={1: "x"}, calls=(charged("ok"),)), "key 1 is a int"),
    (StepResult(output="fine", calls=(charged({"content": "\udfff"}),)), None),  # only the response: kept as a note
], ids=["surrogate", "nan", "int-key", "response-only"])
async def test_an_unrecordable_answer_ends_the_attempt_and_keeps_its_cost(tmp_path: Path, result: StepResult,
                                                                         where: str | None) -> None:
    workflow = Workflow.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
                                        "metadata": {"name": "odd"},
                                        "spec": {"steps": [{"name": "ask", "kind": "tool", "tool": "echo"}]}})
    bundle = Bundle(workflow, Catalog(), MANIFEST)
    run_dir = create_run(RunStore(tmp_path / "runs"), bundle, [])
    run = await drive(run_dir, bundle, Answering(result))  # no traceback: the run ends
    assert run.finished
    node = run.nodes["ask"]
    if where is None:
        assert run.phase == "Succeeded"
    else:
        assert run.phase == "Failed" and node.error is not None and node.error.type == "InvalidOutput"
        assert where in node.error.message, node.error.message
    assert run.cost_usd == pytest.approx(0.25) and run.tokens == 120  # what the provider charged is counted
    costs = [r.event.data for r in run_dir.read_records() if r.event.type is EventType.cost_recorded]
    assert len(costs) == 1 and costs[0]["call"]["cost_usd"] == 0.25
