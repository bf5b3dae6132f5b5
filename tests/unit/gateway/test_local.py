"""The local runner's in-process gateway: the Budgets of the manifests are enforced like in a cluster."""

from __future__ import annotations

from pathlib import Path

from agentflow.engine.values import StepRequest, step_of_node
from agentflow.executors import InProcessExecutor
from agentflow.gateway.local import LocalModels
from agentflow.runner.session import load_bundle, make_executor

QUICKSTART = Path(__file__).parents[3] / "examples" / "manifests" / "quickstart.yaml"


def budget(tokens: int) -> str:
    return f"""
---
apiVersion: agentflow.dev/v1alpha1
kind: Budget
metadata:
  name: tiny
spec:
  limits: {{tokens: {tokens}}}
  scope:
    agentSelector:
      matchLabels: {{app: quickstart}}
"""


def classify(attempt: int = 1) -> StepRequest:
    return StepRequest(run_id="run-1", node="classify", step="classify", kind="llm", attempt=attempt,
                       inputs={"ticket": "I was charged twice"})


def executor(tmp_path: Path, tokens: int) -> InProcessExecutor:
    path = tmp_path / "run.yaml"
    path.write_text(QUICKSTART.read_text() + budget(tokens))
    made = make_executor(load_bundle([path]), "inprocess", env={"AGENTFLOW_MODEL_MODE": "offline"})
    assert isinstance(made, InProcessExecutor)
    return made


async def test_a_local_step_within_its_budget_runs_and_is_charged(tmp_path: Path) -> None:
    ex = executor(tmp_path, tokens=5000)
    result = await ex.execute(classify())
    assert result.ok, result.error
    [call] = result.calls
    assert call.name == "agentflow/offline" and call.input_tokens > 0
    models = ex.services.models
    assert isinstance(models, LocalModels)
    [logged] = await models.gateway.ledger.calls()  # type: ignore[attr-defined]
    assert (logged.workflow, logged.node, logged.attempt, logged.step, logged.agent) == (
        "quickstart", "classify", 1, "classify", "quickstart-agent")
    assert logged.budgets == ("default/tiny",) and logged.status == "ok"


async def test_a_local_step_over_a_hard_budget_fails_with_budget_exceeded(tmp_path: Path) -> None:
    result = await executor(tmp_path, tokens=100).execute(classify())
    assert result.error is not None
    assert result.error.type == "BudgetExceeded" and result.error.retryable is False
    assert "Budget default/tiny (hard) is exhausted" in result.error.message
    assert result.calls == ()


def test_node_ids_map_to_their_step() -> None:
    assert [step_of_node(n) for n in ("classify", "classify[12]", "review#3")] == ["classify", "classify", "review"]
