"""The cost preflight of a plan step: its planning calls, and its plan's steps bounded by maxCostUsd."""

from __future__ import annotations

from pathlib import Path

from agentflow.cost.estimate import estimate_workflow
from agentflow.engine.tokens import approximate_token_counter
from agentflow.loader import load_documents
from agentflow.models import Catalog, Workflow
from agentflow.models.manifests import parse_documents

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "manifests" / "incident-planner.yaml"


def test_a_plan_step_is_priced_by_its_planning_calls_and_its_cost_limit() -> None:
    loaded = parse_documents(load_documents([EXAMPLE]))
    workflow = next(r.resource for r in loaded if isinstance(r.resource, Workflow))
    catalog = Catalog()
    for r in loaded:
        if not isinstance(r.resource, Workflow):
            catalog.add(r.resource)
    estimate = estimate_workflow(workflow, catalog, None, lambda model: (1e-6, 2e-6),
                                 count_tokens=approximate_token_counter)
    respond = estimate.steps[0]
    assert respond.kind == "plan" and respond.model == "openai/gpt-4o-mini"
    assert respond.calls.low == 1 and respond.calls.high == 2  # repairs: 1
    assert respond.usd is not None and 0.5 < respond.usd.high < 0.51  # maxCostUsd 0.50 + the planning calls
    assert any("maxCostUsd" in note for note in respond.assumptions)
