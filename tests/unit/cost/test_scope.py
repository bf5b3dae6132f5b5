"""Which Budgets count a call (namespace, workflow and agent selectors, budgetRef), and their thresholds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agentflow.cost import (
    applies,
    exhausted,
    line_for,
    lines_for,
    scope_problem,
    thresholds_crossed,
    used_fraction,
)
from agentflow.models import parse_resource
from agentflow.models.budget import Budget, BudgetLimits
from agentflow.storage.ledger import BudgetLine, Usage

NOW = dt.datetime(2024, 2, 29, 15, 30, tzinfo=dt.UTC)


def budget(name: str = "b", namespace: str | None = "team-a", uid: str | None = None, **spec: Any) -> Budget:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if uid is not None:
        meta["uid"] = uid
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Budget", "metadata": meta,
            "spec": {"limits": {"usd": 10.0}, **spec}}
    resource = parse_resource(body)
    assert isinstance(resource, Budget)
    return resource


def test_a_namespace_budget_counts_everything_in_its_namespace_only() -> None:
    b = budget()
    assert applies(b, "team-a", {}, None)
    assert applies(b, "team-a", {"x": "y"}, {"tier": "gold"})
    assert not applies(b, "team-b", {}, None)


def test_scope_namespace_must_be_the_budgets_own() -> None:
    same = budget(scope={"namespace": "team-a"})
    assert applies(same, "team-a", {}, None)
    other = budget(scope={"namespace": "team-b"})
    assert not applies(other, "team-b", {}, None)
    assert not applies(other, "team-a", {}, None)
    problem = scope_problem(other)
    assert problem is not None and "'team-b'" in problem and "own namespace 'team-a'" in problem
    assert scope_problem(same) is None


def test_a_local_budget_without_namespace_belongs_to_the_runs_namespace() -> None:
    local = budget(namespace=None)
    assert applies(local, "default", {}, None)
    assert line_for(local, "default", NOW).budget_uid == "default/b"
    assert applies(budget(namespace=None, scope={"namespace": "dev"}), "dev", {}, None)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"matchLabels": {"team": "search"}}, {"team": "search", "x": "1"}, True),
        ({"matchLabels": {"team": "search"}}, {"team": "ads"}, False),
        ({"matchLabels": {"team": "search"}}, {}, False),
        ({}, {}, True),  # an empty selector matches everything
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]}]}, {"env": "prod"}, True),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {"env": "dev"}, False),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, {"env": "dev"}, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, {}, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, {"env": "prod"}, False),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {"env": ""}, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {"env": "x"}, False),
        (  # everything ANDed
            {"matchLabels": {"team": "search"}, "matchExpressions": [{"key": "env", "operator": "Exists"}]},
            {"team": "search"},
            False,
        ),
    ],
)
def test_workflow_selector(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert applies(budget(scope={"workflowSelector": selector}), "team-a", labels, None) is expected


def test_agent_selector_needs_an_agent_and_both_selectors_must_match() -> None:
    b = budget(scope={"agentSelector": {"matchLabels": {"tier": "gold"}},
                      "workflowSelector": {"matchLabels": {"team": "search"}}})
    assert applies(b, "team-a", {"team": "search"}, {"tier": "gold"})
    assert not applies(b, "team-a", {"team": "search"}, None)  # no Agent made the call
    assert not applies(b, "team-a", {"team": "ads"}, {"tier": "gold"})
    assert not applies(b, "team-a", {"team": "search"}, {"tier": "silver"})
    assert not applies(b, "team-b", {"team": "search"}, {"tier": "gold"})


def test_bad_match_expressions_are_refused_naming_the_field() -> None:
    from agentflow.models import ManifestError

    with pytest.raises(ManifestError, match=r"spec.scope.workflowSelector.matchExpressions\[0\].*needs values"):
        budget(scope={"workflowSelector": {"matchExpressions": [{"key": "a", "operator": "NotIn"}]}})
    with pytest.raises(ManifestError, match="takes no values"):
        budget(scope={"workflowSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}})
    with pytest.raises(ManifestError, match="operator"):
        budget(scope={"workflowSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}})


def test_line_for_carries_the_window_limits_and_enforcement() -> None:
    b = budget(uid="u-1", period="daily", limits={"usd": 2.5, "tokens": 1000}, enforcement="soft")
    assert line_for(b, "team-a", NOW) == BudgetLine(
        budget_uid="u-1", namespace="team-a", name="b",
        window_start=dt.datetime(2024, 2, 29, tzinfo=dt.UTC), window_end=dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
        limit_usd=2.5, limit_tokens=1000, hard=False,
    )
    assert line_for(budget(uid="u-2", period="total"), "team-a", NOW).window_end is None


def test_lines_for_picks_the_applicable_budgets_in_uid_order_and_adds_the_budget_ref() -> None:
    ns_wide = budget("ns", uid="u-3")
    gold = budget("gold", uid="u-1", scope={"agentSelector": {"matchLabels": {"tier": "gold"}}})
    other_team = budget("ads", uid="u-2", scope={"workflowSelector": {"matchLabels": {"team": "ads"}}})
    elsewhere = budget("elsewhere", namespace="team-b", uid="u-0")
    budgets = [ns_wide, gold, other_team, elsewhere]
    got = lines_for(budgets, "team-a", {"team": "search"}, {"tier": "gold"}, NOW)
    assert [line.name for line in got] == ["gold", "ns"]
    assert [line.budget_uid for line in got] == ["u-1", "u-3"]
    # budgetRef opts a Workflow into a Budget whose selector would not match it, once.
    got = lines_for(budgets, "team-a", {"team": "search"}, None, NOW, budget_ref="ads")
    assert [line.name for line in got] == ["ads", "ns"]
    got = lines_for(budgets, "team-a", {"team": "search"}, None, NOW, budget_ref="ns")
    assert [line.name for line in got] == ["ns"]
    # ... but never one of another namespace.
    assert [line.name for line in lines_for(budgets, "team-a", {}, None, NOW, budget_ref="elsewhere")] == ["ns"]
    assert lines_for([], "team-a", {}, None, NOW) == []


def test_used_fraction_takes_the_larger_of_dollars_and_tokens() -> None:
    both = BudgetLimits(usd=10.0, tokens=1000)
    assert used_fraction(both, Usage(spent_usd=5.0, spent_tokens=100)) == 0.5
    assert used_fraction(both, Usage(spent_usd=1.0, spent_tokens=900)) == 0.9
    assert used_fraction(BudgetLimits(tokens=1000), Usage(spent_usd=99.0, spent_tokens=10)) == 0.01
    assert used_fraction(BudgetLimits(usd=0.0), Usage()) == 1.0  # a zero limit is exhausted from the start
    assert not exhausted(both, Usage(spent_usd=9.99))
    assert exhausted(both, Usage(spent_usd=10.0))
    assert exhausted(both, Usage(spent_tokens=1001))
    # reserved money is not spent: thresholds and exhaustion are about settled spend
    assert used_fraction(both, Usage(reserved_usd=10.0, reserved_tokens=1000)) == 0.0


def test_thresholds_crossed() -> None:
    limits = BudgetLimits(usd=100.0)
    assert thresholds_crossed([0.5, 0.8, 1.0], limits, Usage(spent_usd=49.99)) == []
    assert thresholds_crossed([0.8, 0.5, 1.0], limits, Usage(spent_usd=80.0)) == [0.5, 0.8]
    assert thresholds_crossed([0.5, 0.8, 1.0], limits, Usage(spent_usd=85.0), already=[0.5]) == [0.8]
    assert thresholds_crossed([0.5, 0.8, 1.0], limits, Usage(spent_usd=85.0), already=[0.5, 0.8]) == []
    assert thresholds_crossed([0.5, 0.5], limits, Usage(spent_usd=120.0)) == [0.5]
