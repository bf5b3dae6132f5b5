"""Which Budgets count a model call, the ledger lines they become, and their alert thresholds. Pure.

A Budget applies to a call made in namespace ``N`` by a run of a Workflow (labels ``W``) through an
Agent (labels ``A``, or none) when all of these hold:

- **namespace**: ``spec.scope.namespace`` (default: the Budget's own namespace) is ``N``, and it is the
  Budget's own namespace. A Budget never counts another namespace: Budgets are namespaced objects, and
  whoever may create one in namespace X must not be able to charge, or (with ``enforcement: hard``)
  stop, the model calls of namespace Y. A Budget whose scope names another namespace applies nowhere
  (its status says so). A Budget read from a local file without ``metadata.namespace`` belongs to the
  namespace the run is in.
- **workflowSelector** (if set) matches ``W``;
- **agentSelector** (if set) matches ``A``; a call made by no Agent does not match an agentSelector.

Selectors are Kubernetes label selectors (matchLabels and matchExpressions, ANDed; an empty selector
matches everything): :class:`agentflow.models.budget.ScopeSelector`. Besides its scope, the Budget a
Workflow names in ``spec.budgetRef`` always applies to its calls (the Workflow opted in).

:func:`lines_for` turns the Budgets that apply into :class:`~agentflow.storage.ledger.BudgetLine` for the
window of ``now`` (:func:`agentflow.cost.periods.window`), in a stable order (by budget uid) so that
every ledger locks them in the same order. :func:`thresholds_crossed` says which ``alertThresholds`` a
spend has reached, for Budget status and Events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from ..models.budget import Budget, BudgetLimits
from ..storage.ledger import BudgetLine, Usage
from .periods import window

__all__ = [
    "applies",
    "budget_uid",
    "exhausted",
    "line_for",
    "lines_for",
    "scope_problem",
    "thresholds_crossed",
    "used_fraction",
]


def _own_namespace(budget: Budget, namespace: str) -> str:
    return budget.metadata.namespace or namespace


def scope_problem(budget: Budget, namespace: str | None = None) -> str | None:
    """Why the Budget can apply nowhere (its scope names another namespace), or None."""
    own = budget.metadata.namespace or namespace
    scoped = budget.spec.scope.namespace
    if scoped is not None and own is not None and scoped != own:
        return (
            f"spec.scope.namespace {scoped!r} is not the Budget's own namespace {own!r}: a Budget only counts "
            f"its own namespace; create the Budget in namespace {scoped!r} instead"
        )
    return None


def applies(
    budget: Budget,
    namespace: str,
    workflow_labels: Mapping[str, str] | None,
    agent_labels: Mapping[str, str] | None,
) -> bool:
    """Whether ``budget`` counts a call made in ``namespace`` (see the module docstring).

    ``agent_labels`` is None for a call made by no Agent; ``workflow_labels`` None is the same as no labels.
    """
    own = _own_namespace(budget, namespace)
    scope = budget.spec.scope
    if own != namespace or (scope.namespace is not None and scope.namespace != own):
        return False
    if scope.workflow_selector is not None and not scope.workflow_selector.matches(dict(workflow_labels or {})):
        return False
    return scope.agent_selector is None or (
        agent_labels is not None and scope.agent_selector.matches(dict(agent_labels))
    )


def budget_uid(budget: Budget, namespace: str) -> str:
    """The ledger key of a Budget: its metadata.uid, or ``namespace/name`` for a local manifest without one.

    A Budget deleted and created again has a new uid, and so starts empty.
    """
    return budget.metadata.uid or f"{_own_namespace(budget, namespace)}/{budget.metadata.name}"


def line_for(budget: Budget, namespace: str, now: dt.datetime) -> BudgetLine:
    """The ledger line of ``budget`` for the window containing ``now``."""
    start, end = window(budget.spec.period, now)
    return BudgetLine(
        budget_uid=budget_uid(budget, namespace),
        namespace=_own_namespace(budget, namespace),
        name=budget.metadata.name,
        window_start=start,
        window_end=end,
        limit_usd=budget.spec.limits.usd,
        limit_tokens=budget.spec.limits.tokens,
        hard=budget.spec.enforcement == "hard",
    )


def lines_for(
    budgets: Iterable[Budget],
    namespace: str,
    workflow_labels: Mapping[str, str] | None,
    agent_labels: Mapping[str, str] | None,
    now: dt.datetime,
    *,
    budget_ref: str | None = None,
) -> list[BudgetLine]:
    """The lines a call must reserve on: every Budget that applies, plus the one named by ``budget_ref``
    (the Workflow's spec.budgetRef, if it is in ``namespace``), once each, ordered by budget uid."""
    lines: dict[str, BudgetLine] = {}
    for budget in budgets:
        referenced = budget_ref is not None and budget.metadata.name == budget_ref and (
            _own_namespace(budget, namespace) == namespace
        ) and scope_problem(budget, namespace) is None
        if referenced or applies(budget, namespace, workflow_labels, agent_labels):
            line = line_for(budget, namespace, now)
            lines[line.budget_uid] = line
    return [lines[uid] for uid in sorted(lines)]


def used_fraction(limits: BudgetLimits, usage: Usage) -> float:
    """The larger of spent/limit in dollars and in tokens (a zero limit is used up by anything, or
    reached at once); 0.0 when no limit is set."""
    fractions = []
    for limit, spent in ((limits.usd, usage.spent_usd), (limits.tokens, float(usage.spent_tokens))):
        if limit is None:
            continue
        fractions.append(spent / limit if limit > 0 else 1.0)
    return max(fractions, default=0.0)


def exhausted(limits: BudgetLimits, usage: Usage) -> bool:
    """Whether the spend reached a limit (dollars or tokens)."""
    return used_fraction(limits, usage) >= 1.0


def thresholds_crossed(
    thresholds: Sequence[float], limits: BudgetLimits, usage: Usage, already: Iterable[float] = ()
) -> list[float]:
    """The ``thresholds`` (fractions of a limit) the spend has reached and that are not in ``already``
    (the ones reported before in this window), ascending and without duplicates."""
    fraction = used_fraction(limits, usage)
    seen = set(already)
    return sorted({t for t in thresholds if fraction >= t and t not in seen})
