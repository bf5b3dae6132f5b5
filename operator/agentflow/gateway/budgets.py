"""Budget sources of the gateway: which ledger lines a call is charged to.

:func:`budget_lines` turns Budgets into the lines that apply to a call (agentflow.cost.scope.lines_for, the
same rules as admission and the status loop); :class:`CatalogBudgets` is the source over Budgets held in
memory (the local runner's manifests, `agentflow gateway --budgets FILE`). The operator's source, which
lists Budgets from the cluster, is agentflow.services.gateway.KubeBudgets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from ..cost.scope import lines_for
from ..models import Budget
from ..storage.ledger import BudgetLine
from .service import Attribution

__all__ = ["CatalogBudgets", "budget_lines"]


def budget_lines(budgets: Iterable[Budget], who: Attribution, now: dt.datetime) -> list[BudgetLine]:
    """The ledger lines of the Budgets that apply to a call of ``who`` (agentflow.cost.scope.lines_for)."""
    agent_labels = who.agent_labels if who.agent is not None else None
    return lines_for(budgets, who.namespace, who.workflow_labels, agent_labels, now, budget_ref=who.budget_ref)


class CatalogBudgets:
    """Budget lines from Budgets held in memory (the local runner's manifests, `agentflow gateway --budgets`)."""

    def __init__(self, budgets: Iterable[Budget]) -> None:
        self._budgets = list(budgets)

    async def __call__(self, who: Attribution, now: dt.datetime) -> Sequence[BudgetLine]:
        return budget_lines(self._budgets, who, now)
