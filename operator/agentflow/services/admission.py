"""Admission by budget: on CREATE of a Workflow, its cost preflight against the Budgets that apply.

::

    admit(workflow, namespace, catalog, *, meter, ledger, list_workflows, now) -> Admission     (I/O: ledger,
        estimate_workflow(...)                the preflight (agentflow.cost.estimate)          Workflows list)
        lines_for(budgets, ...) per step      which Budgets count each step's calls (agentflow.cost.scope)
        ledger.usage(line)                    spent + reserved in the current window
        judge(...) -> Admission               pure: the decision and its words

Rules:

- **Hard budget**: the Workflow is refused when its *expected* cost (dollars, and tokens for a token
  limit) is more than the Budget has left (limit - spent - reserved). The expected, not the high, estimate:
  the high one assumes every retry and every repair of every step, which would refuse workflows that
  nearly always fit; the ledger still refuses any single call that does not fit at run time. The message
  gives the estimate (low / expected / high) and what each Budget has left.
- **Soft budget**: admitted; the same words come back as an admission warning (kubectl prints
  ``Warning: ...``).
- **maxConcurrentWorkflows** (a Budget's quota): refused when the Workflows of the Budget's scope in the
  namespace that have not finished (no Succeeded/Failed/Cancelled phase, not being deleted) already number
  that many; the message names the Budget, the limit and the count.
- **No ledger** (PostgreSQL unreachable, or the operator has none): fail closed for hard budgets (refused,
  saying the spend cannot be checked and why), a warning for soft ones. Hard budgets exist to stop spend,
  and a Workflow admitted blind could pass one by any amount.
- **No estimate** (an unknown Agent or PromptVersion, already reported as a reference warning): admitted
  with a warning that the cost was not checked; its calls still go through the ledger at run time.
- A model without a price: its tokens still count against token limits; a warning says its dollars are
  not estimated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ..cost.estimate import Estimate, EstimateError, Prices, TokenCounter, estimate_workflow
from ..cost.scope import applies, lines_for
from ..models import Budget, Catalog, StepSpec, Workflow
from ..storage.ledger import BudgetLine, Usage

__all__ = ["TERMINAL_PHASES", "Admission", "CostMeter", "UsageReader", "admit", "judge"]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
LEDGER_TIMEOUT_SECONDS = 3.0
"""How long admission waits for the ledger (the API server gives a webhook 10 s by default)."""


class UsageReader(Protocol):
    async def usage(self, line: BudgetLine) -> Usage: ...


@dataclasses.dataclass(frozen=True)
class CostMeter:
    """The two litellm-backed functions the estimate needs (agentflow.llm.pricing)."""

    count_tokens: TokenCounter
    prices: Prices


@dataclasses.dataclass(frozen=True)
class Admission:
    allowed: bool
    message: str | None = None
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Ask:
    """What one Budget line is asked for by the whole Workflow (expected amounts)."""

    line: BudgetLine
    usd: float
    tokens: int


def _usd(x: float) -> str:
    return f"${x:.6f}" if x < 1 else f"${x:,.4f}"


def _steps(workflow: Workflow) -> dict[str, StepSpec]:
    """Steps by the name the estimate uses (a state's step by its state's name, a tree leaf's by its own)."""
    return dict(workflow.spec.keyed_steps())


def asks(estimate: Estimate, workflow: Workflow, namespace: str, catalog: Catalog,
         now: dt.datetime) -> list[_Ask]:
    """Per Budget line, the expected dollars and tokens of the steps whose calls it counts."""
    steps = _steps(workflow)
    labels = workflow.metadata.labels
    ref = workflow.spec.budget_ref.name if workflow.spec.budget_ref is not None else None
    totals: dict[str, list[Any]] = {}
    for step in estimate.steps:
        if step.model is None:
            continue
        spec = steps.get(step.step)
        agent = catalog.agents.get(spec.agent_ref.name) if spec is not None and spec.agent_ref else None
        agent_labels = agent.metadata.labels if agent is not None else None
        for line in lines_for(catalog.budgets.values(), namespace, labels, agent_labels, now, budget_ref=ref):
            entry = totals.setdefault(line.budget_uid, [line, 0.0, 0.0])
            entry[1] += step.usd.expected if step.usd is not None else 0.0
            entry[2] += step.tokens.expected
    return [_Ask(line, usd, round(tokens)) for line, usd, tokens in totals.values()]


def _estimate_words(estimate: Estimate) -> str:
    u, t = estimate.usd, estimate.tokens
    return (f"estimated cost {_usd(u.expected)} (low {_usd(u.low)}, high {_usd(u.high)}), "
            f"{t.expected:.0f} tokens (low {t.low:.0f}, high {t.high:.0f})")


def _shortfall(ask: _Ask, usage: Usage) -> str | None:
    """Why ``ask`` does not fit the line's remainder, or None when it fits."""
    line = ask.line
    parts = []
    if line.limit_usd is not None:
        left = line.limit_usd - usage.spent_usd - usage.reserved_usd
        if ask.usd > left:
            parts.append(f"{_usd(ask.usd)} expected on it, {_usd(max(0.0, left))} left of {_usd(line.limit_usd)} "
                         f"(spent {_usd(usage.spent_usd)}, reserved {_usd(usage.reserved_usd)})")
    if line.limit_tokens is not None:
        left_t = line.limit_tokens - usage.spent_tokens - usage.reserved_tokens
        if ask.tokens > left_t:
            parts.append(f"{ask.tokens} tokens expected on it, {max(0, left_t)} left of {line.limit_tokens}")
    return "; ".join(parts) or None


def _budget(line: BudgetLine) -> str:
    return f"Budget {line.namespace}/{line.name} ({'hard' if line.hard else 'soft'})"


def judge(workflow: str, estimate: Estimate, usages: Sequence[tuple[_Ask, Usage | str]]) -> Admission:
    """The decision over each line's ask and its usage (or why the usage could not be read). Pure."""
    refusals: list[str] = []
    warnings: list[str] = []
    for ask, usage in usages:
        window = f"window from {ask.line.window_start.date().isoformat()}"
        if isinstance(usage, str):
            if ask.line.hard:
                refusals.append(f"{_budget(ask.line)}: cannot check what is left ({usage}); hard budgets refuse "
                                "new Workflows while the spend cannot be checked")
            else:
                warnings.append(f"{_budget(ask.line)}: spend not checked ({usage})")
            continue
        short = _shortfall(ask, usage)
        if short is None:
            continue
        if ask.line.hard:
            refusals.append(f"{_budget(ask.line)}, {window}: {short}")
        else:
            warnings.append(f"Workflow/{workflow}: {_estimate_words(estimate)} is more than {_budget(ask.line)} "
                            f"has left ({window}): {short}; admitted because the budget is soft")
    if estimate.unpriced:
        warnings.append(f"Workflow/{workflow}: no price for {', '.join(estimate.unpriced)}: its dollars are not in "
                        "the estimate checked against Budgets")
    if refusals:
        message = (f"Workflow/{workflow}: {_estimate_words(estimate)} does not fit:\n"
                   + "\n".join(f"- {r}" for r in refusals)
                   + "\nraise the Budget's spec.limits, wait for its next period, or make the Workflow cheaper "
                     "(agentflow cost FILE.yaml shows the estimate per step)")
        return Admission(False, message, tuple(warnings))
    return Admission(True, None, tuple(warnings))


def _quota_budgets(budgets: Sequence[Budget], namespace: str, labels: Mapping[str, str],
                   ref: str | None) -> list[Budget]:
    return [b for b in budgets if b.spec.max_concurrent_workflows is not None and (
        applies(b, namespace, labels, None) or (ref is not None and b.metadata.name == ref))]


def quota_problem(workflow: Workflow, namespace: str, budgets: Sequence[Budget],
                  others: Sequence[Mapping[str, Any]]) -> str | None:
    """maxConcurrentWorkflows: why the Workflow would be one too many, or None. Pure.

    ``others`` are the namespace's Workflow bodies; the ones finished or being deleted do not count.
    """
    ref = workflow.spec.budget_ref.name if workflow.spec.budget_ref is not None else None
    for budget in sorted(_quota_budgets(budgets, namespace, workflow.metadata.labels, ref),
                         key=lambda b: b.metadata.name):
        limit = budget.spec.max_concurrent_workflows
        assert limit is not None
        running = []
        for body in others:
            meta = body.get("metadata") or {}
            if meta.get("name") == workflow.metadata.name or meta.get("deletionTimestamp"):
                continue
            if ((body.get("status") or {}).get("phase")) in TERMINAL_PHASES:
                continue
            their_ref = ((body.get("spec") or {}).get("budgetRef") or {}).get("name")
            if applies(budget, namespace, meta.get("labels") or {}, None) or their_ref == budget.metadata.name:
                running.append(str(meta.get("name")))
        if len(running) >= limit:
            shown = ", ".join(sorted(running)[:5]) + (", ..." if len(running) > 5 else "")
            return (f"Workflow/{workflow.metadata.name}: Budget {namespace}/{budget.metadata.name} allows "
                    f"{limit} concurrent Workflow(s) (spec.maxConcurrentWorkflows) and {len(running)} have not "
                    f"finished ({shown}); wait for one to finish or raise the quota")
    return None


async def admit(
    workflow: Workflow,
    namespace: str,
    catalog: Catalog,
    *,
    meter: CostMeter,
    ledger: UsageReader | None,
    list_workflows: Callable[[], Awaitable[list[dict[str, Any]]]],
    now: dt.datetime,
    ledger_problem: str | None = None,
    quota: bool = True,
) -> Admission:
    """Whether the budgets and quotas of ``namespace`` let ``workflow`` in (see the module docstring).

    ``ledger`` None means the operator has no usable ledger; ``ledger_problem`` then says why. ``quota``
    False (an UPDATE of a Workflow that already counts against the quota): only the estimate is checked, the
    whole new estimate against what the hard Budgets have left.
    """
    budgets = list(catalog.budgets.values())
    if not budgets:
        return Admission(True)
    ref = workflow.spec.budget_ref.name if workflow.spec.budget_ref is not None else None
    if quota and _quota_budgets(budgets, namespace, workflow.metadata.labels, ref):
        problem = quota_problem(workflow, namespace, budgets, await list_workflows())
        if problem is not None:
            return Admission(False, problem)
    try:
        estimate = await asyncio.to_thread(estimate_workflow, workflow, catalog, None, meter.prices, None,
                                           count_tokens=meter.count_tokens)
    except EstimateError as exc:
        return Admission(True, warnings=(f"Workflow/{workflow.metadata.name}: cost not checked against Budgets: "
                                         f"{exc}",))
    wanted = asks(estimate, workflow, namespace, catalog, now)
    usages: list[tuple[_Ask, Usage | str]] = []
    for ask in wanted:
        if ledger is None:
            usages.append((ask, ledger_problem or "the operator has no budget ledger (--postgres-dsn)"))
            continue
        try:
            usages.append((ask, await asyncio.wait_for(ledger.usage(ask.line), LEDGER_TIMEOUT_SECONDS)))
        except TimeoutError:
            usages.append((ask, f"the ledger did not answer within {LEDGER_TIMEOUT_SECONDS:g}s"))
        except Exception as exc:  # StorageUnavailable and kin: whatever it is, the spend is unknown
            usages.append((ask, f"the ledger is unreachable: {type(exc).__name__}: {exc}"))
    return judge(workflow.metadata.name, estimate, usages)
