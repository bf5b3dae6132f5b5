"""Admission by budget (services.admission): hard refuses, soft warns, quotas count, no ledger fails closed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agentflow.cost.scope import lines_for
from agentflow.models import Catalog, Workflow, parse_resource
from agentflow.services.admission import CostMeter, admit
from agentflow.storage.ledger import BudgetLine, Usage
from agentflow.storage.memory_ledger import MemoryLedger

NS = "team"
NOW = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)


def words(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


# $1 per input token, $2 per output token: one call of this workflow is 5 + 2*100 = $205 expected.
METER = CostMeter(count_tokens=words, prices=lambda model: (1.0, 2.0))
API = "agentflow.dev/v1alpha1"


def budget(name: str, usd: float, enforcement: str = "hard", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Budget", "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"limits": {"usd": usd}, "enforcement": enforcement, "period": "monthly", **spec}}


def setup(*budgets: dict[str, Any]) -> tuple[Workflow, Catalog]:
    docs = [
        {"apiVersion": API, "kind": "Agent", "metadata": {"name": "a", "namespace": NS},
         "spec": {"role": "r", "model": {"name": "openai/x", "maxTokens": 100}}},
        {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": "p", "namespace": NS},
         "spec": {"prompt": "p", "version": "1", "messages": [{"role": "user", "content": "say ${{ inputs.x }}"}]}},
        *budgets,
    ]
    catalog = Catalog()
    for doc in docs:
        catalog.add(parse_resource(doc))  # type: ignore[arg-type]
    wf = parse_resource({"apiVersion": API, "kind": "Workflow", "metadata": {"name": "wf", "namespace": NS},
                         "spec": {"steps": [{"name": "s", "kind": "llm", "agentRef": {"name": "a"},
                                             "promptRef": {"name": "p"}, "inputs": {"x": "hi"}}]}})
    assert isinstance(wf, Workflow)
    return wf, catalog


async def nothing_running() -> list[dict[str, Any]]:
    return []


async def spend(ledger: MemoryLedger, catalog: Catalog, usd: float) -> None:
    lines = lines_for(catalog.budgets.values(), NS, {}, {}, NOW)
    r = await ledger.reserve(lines, usd, 0, reference="earlier")
    await ledger.settle(r.id, usd, 0)


async def test_a_hard_budget_refuses_what_does_not_fit_and_says_estimate_and_remainder() -> None:
    wf, catalog = setup(budget("team-hard", 300.0))
    ledger = MemoryLedger(clock=lambda: NOW)
    fits = await admit(wf, NS, catalog, meter=METER, ledger=ledger, list_workflows=nothing_running, now=NOW)
    assert fits.allowed and not fits.warnings
    await spend(ledger, catalog, 150.0)
    refused = await admit(wf, NS, catalog, meter=METER, ledger=ledger, list_workflows=nothing_running, now=NOW)
    assert not refused.allowed and refused.message is not None
    assert refused.message.startswith("Workflow/wf: estimated cost $205.0000 (low $")
    assert "Budget team/team-hard (hard), window from 2025-03-01: $205.0000 expected on it, $150.0000 left of " \
           "$300.0000 (spent $150.0000, reserved $0.000000)" in refused.message


async def test_a_soft_budget_admits_with_a_warning() -> None:
    wf, catalog = setup(budget("team-soft", 100.0, "soft"))
    ledger = MemoryLedger(clock=lambda: NOW)
    decision = await admit(wf, NS, catalog, meter=METER, ledger=ledger, list_workflows=nothing_running, now=NOW)
    assert decision.allowed
    [warning] = decision.warnings
    assert "is more than Budget team/team-soft (soft) has left" in warning and "admitted because" in warning
    assert "$205.0000 expected on it, $100.0000 left" in warning


async def test_no_ledger_fails_closed_for_hard_budgets_and_warns_for_soft() -> None:
    wf, catalog = setup(budget("h", 1e6), budget("s", 1e6, "soft"))
    decision = await admit(wf, NS, catalog, meter=METER, ledger=None, list_workflows=nothing_running, now=NOW,
                           ledger_problem="PostgreSQL at db:5432 refused the connection")
    assert not decision.allowed and decision.message is not None
    assert "Budget team/h (hard): cannot check what is left (PostgreSQL at db:5432 refused" in decision.message
    assert any("Budget team/s (soft): spend not checked" in w for w in decision.warnings)

    class Broken:
        async def usage(self, line: BudgetLine) -> Usage:
            raise ConnectionRefusedError("no route")

    broken = await admit(wf, NS, catalog, meter=METER, ledger=Broken(), list_workflows=nothing_running, now=NOW)
    assert not broken.allowed and "the ledger is unreachable: ConnectionRefusedError: no route" in str(broken.message)


@pytest.mark.parametrize("phase, refused", [("Running", True), (None, True), ("Succeeded", False)])
async def test_max_concurrent_workflows(phase: str | None, refused: bool) -> None:
    wf, catalog = setup(budget("quota", 1e6, maxConcurrentWorkflows=1))

    async def one() -> list[dict[str, Any]]:
        return [{"metadata": {"name": "other"}, "status": {"phase": phase} if phase else {}}]

    decision = await admit(wf, NS, catalog, meter=METER, ledger=MemoryLedger(clock=lambda: NOW), list_workflows=one,
                           now=NOW)
    assert decision.allowed is not refused
    if refused:
        assert decision.message == (
            "Workflow/wf: Budget team/quota allows 1 concurrent Workflow(s) (spec.maxConcurrentWorkflows) and 1 "
            "have not finished (other); wait for one to finish or raise the quota")


async def test_no_budgets_nothing_to_check() -> None:
    wf, catalog = setup()

    async def never() -> list[dict[str, Any]]:
        raise AssertionError("no quota: the Workflows are not listed")

    assert (await admit(wf, NS, catalog, meter=METER, ledger=None, list_workflows=never, now=NOW)).allowed


async def test_an_unknown_agent_is_admitted_with_a_cost_warning() -> None:
    wf, catalog = setup(budget("h", 1.0))
    catalog.agents.clear()
    decision = await admit(wf, NS, catalog, meter=METER, ledger=None, list_workflows=nothing_running, now=NOW)
    assert decision.allowed and "cost not checked against Budgets" in decision.warnings[0]


async def test_a_behavior_tree_is_admitted_on_the_estimate_of_its_leaves() -> None:
    """Repeated three times, the tree's leaf is expected to cost 3 x $205: a $500 hard budget refuses it."""
    wf, catalog = setup(budget("team-hard", 500.0))
    step = wf.spec.steps[0].dump()
    tree = parse_resource({"apiVersion": API, "kind": "Workflow", "metadata": {"name": "wf", "namespace": NS},
                           "spec": {"behaviorTree": {"type": "repeat", "count": 3,
                                                     "child": {"type": "step", "step": step}}}})
    assert isinstance(tree, Workflow)
    ledger = MemoryLedger(clock=lambda: NOW)
    refused = await admit(tree, NS, catalog, meter=METER, ledger=ledger, list_workflows=nothing_running, now=NOW)
    assert not refused.allowed and refused.message is not None
    assert refused.message.startswith("Workflow/wf: estimated cost $615.0000"), refused.message
    assert (await admit(wf, NS, catalog, meter=METER, ledger=ledger, list_workflows=nothing_running, now=NOW)).allowed
