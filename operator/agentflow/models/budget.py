"""The Budget resource: dollar and token limits over a scope and a period."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .base import API_VERSION, LabelSelector, Model, ObjectMeta, ResourceStatus


class BudgetScope(Model):
    """What a Budget counts: a namespace, or Workflows/Agents with matching labels."""

    namespace: str | None = None
    """Count every run in this namespace."""
    workflow_selector: LabelSelector | None = None
    """Count runs of Workflows with these labels."""
    agent_selector: LabelSelector | None = None
    """Count calls of Agents with these labels."""


class BudgetLimits(Model):
    """Limits per period; at least one must be set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.usd) || has(self.tokens)", "message": "limits needs usd or tokens"}
            ]
        }
    )

    usd: float | None = Field(default=None, ge=0)
    """Spend limit in US dollars."""
    tokens: int | None = Field(default=None, ge=0)
    """Token limit (input plus output)."""


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
        # The CRD form of the (0, 1] check in _some_limit.
        json_schema_extra={"items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
    )
    """Fractions of a limit at which a ThresholdReached condition and Event are raised."""

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
    remaining_usd: float | None = None
    """US dollars left in the current window."""
    remaining_tokens: int | None = None
    """Tokens left in the current window."""
    window_start: str | None = None
    """RFC 3339 start of the current window."""
    window_end: str | None = None
    """RFC 3339 end of the current window (none for period total)."""


class Budget(Model):
    """A Budget: dollar and token limits over a scope (namespace or labels) and a period."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["Budget"] = "Budget"
    metadata: ObjectMeta
    spec: BudgetSpec
    status: BudgetStatus | None = None
