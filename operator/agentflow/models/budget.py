"""The Budget resource: dollar and token limits over a scope and a period, plus namespace quotas.

Selectors in a Budget's scope are Kubernetes label selectors with both ``matchLabels`` and
``matchExpressions`` (:class:`ScopeSelector`, a :class:`~agentflow.models.base.LabelSelector` that also
knows the In/NotIn/Exists/DoesNotExist requirements). Which Budgets apply to a call is decided by
:func:`agentflow.cost.scope.applies`; periods by :mod:`agentflow.cost.periods`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .base import API_VERSION, LabelSelector, Model, ObjectMeta, ResourceStatus
from .limits import (
    MAX_ALERT_THRESHOLDS,
    MAX_BUDGET_TOKENS,
    MAX_BUDGET_USD,
    MAX_CONCURRENCY_QUOTA,
)


class LabelSelectorRequirement(Model):
    """One matchExpressions entry: ``key operator values`` (Kubernetes semantics)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                    "message": "In and NotIn need values; Exists and DoesNotExist take none",
                }
            ]
        }
    )

    key: str = Field(min_length=1)
    """The label key the requirement is about."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """In / NotIn: the label's value is (not) one of values; Exists / DoesNotExist: the key is (not) set."""
    values: list[str] = Field(default_factory=list)
    """Values for In and NotIn; empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"matchExpressions key {self.key!r}: operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"matchExpressions key {self.key!r}: operator {self.operator} takes no values")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes semantics: NotIn and DoesNotExist match a missing key."""
        match self.operator:
            case "In":
                return self.key in labels and labels[self.key] in self.values
            case "NotIn":
                return labels.get(self.key) not in self.values
            case "Exists":
                return self.key in labels
            case _:
                return self.key not in labels


class ScopeSelector(LabelSelector):
    """A label selector: matchLabels and matchExpressions, all ANDed (empty matches everything)."""

    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Requirements that must all hold."""

    def matches(self, labels: dict[str, str]) -> bool:
        return super().matches(labels) and all(r.matches(labels) for r in self.match_expressions)


class BudgetScope(Model):
    """What a Budget counts: a namespace, or Workflows/Agents with matching labels."""

    namespace: str | None = None
    """Count runs in this namespace; must be the Budget's own namespace (the default): a Budget never
    counts, nor refuses, what runs in another namespace."""
    workflow_selector: ScopeSelector | None = None
    """Count only runs of Workflows with these labels."""
    agent_selector: ScopeSelector | None = None
    """Count only calls made by Agents with these labels."""


class BudgetLimits(Model):
    """Limits per period; at least one must be set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.usd) || has(self.tokens)", "message": "limits needs usd or tokens"}
            ]
        }
    )

    usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    """Spend limit in US dollars (0 to 10^12)."""
    tokens: int | None = Field(default=None, ge=0, le=MAX_BUDGET_TOKENS)
    """Token limit, input plus output (0 to 10^15)."""


class BudgetSpec(Model):
    """Desired state of a Budget."""

    scope: BudgetScope = Field(default_factory=BudgetScope)
    """What is counted (default: the Budget's namespace)."""
    period: Literal["daily", "weekly", "monthly", "total"] = "monthly"
    """Window after which spend resets."""
    limits: BudgetLimits
    """Limits per period."""
    enforcement: Literal["hard", "soft"] = "hard"
    """hard: refuse what does not fit; soft: warn and let it run."""
    alert_thresholds: list[float] = Field(
        default_factory=lambda: [0.8],
        max_length=MAX_ALERT_THRESHOLDS,
        # The CRD form of the (0, 1] check in _some_limit.
        json_schema_extra={"items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
    )
    """Fractions of a limit in (0, 1] at which a ThresholdReached condition and Event are raised (at most 20)."""
    max_concurrent_workflows: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY_QUOTA)
    """Namespace quota: at most this many Workflows of the scope running at once (admission refuses more;
    1 to 100,000)."""
    max_concurrent_steps: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY_QUOTA)
    """Namespace quota: at most this many step pods of the scope running at once (the rest wait; 1 to
    100,000)."""

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        if self.limits.usd is None and self.limits.tokens is None:
            raise ValueError("limits needs usd or tokens")
        if any(not 0 < t <= 1 for t in self.alert_thresholds):
            raise ValueError("alertThresholds are fractions in (0, 1]")
        return self


class BudgetStatus(ResourceStatus):
    """Observed spend."""

    spent_usd: float | None = None
    """US dollars spent in the current window."""
    spent_tokens: int | None = None
    """Tokens spent in the current window."""
    reserved_usd: float | None = None
    """US dollars reserved by calls in flight."""
    reserved_tokens: int | None = None
    """Tokens reserved by calls in flight."""
    remaining_usd: float | None = None
    """US dollars left in the current window."""
    remaining_tokens: int | None = None
    """Tokens left in the current window."""
    window_start: str | None = None
    """RFC 3339 start of the current window."""
    window_end: str | None = None
    """RFC 3339 end of the current window (none for period total)."""
    limit_usd: float | None = None
    """spec.limits.usd the numbers were computed against."""
    limit_tokens: int | None = None
    """spec.limits.tokens the numbers were computed against."""
    used_fraction: float | None = None
    """The larger of spent/limit in dollars and in tokens (1 or more: exhausted)."""
    thresholds_reached: list[float] = Field(default_factory=list)
    """spec.alertThresholds reached in the current window (an Event was emitted once for each)."""
    last_rollover: str | None = None
    """RFC 3339 time the operator saw the window roll over to the current one."""


class Budget(Model):
    """A Budget: dollar and token limits over a scope (namespace or labels) and a period."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["Budget"] = "Budget"
    metadata: ObjectMeta
    spec: BudgetSpec
    status: BudgetStatus | None = None
