"""``agentflow cost report``: where the money went, cache hit rates, and cheaper models worth trying.

::

    build_report(calls, *, min_calls=3) -> Report        pure, over LlmCall rows
      spend by namespace, workflow, agent, model (the model that answered)
      cache hit rates by model
      recommendations: cheaper models that ran the same PromptVersion successfully

Rows come from the ledger (``PostgresLedger.calls``, every gateway call of the cluster) or from local run
journals (:func:`agentflow.cost.calibration.observations_from_journal`, namespace ``(local)``).

**The recommendation criterion, stated as it is.** Evaluation verdicts exist only where ``agentflow prompt
eval`` stores them (a state dir's ``evals/``, per PromptVersion and run with whatever model the Agent names),
not per model in the ledger, so no recommendation here says a model *passed the evaluations*. Instead, a
model B is recommended in place of model A for an Agent's calls with PromptVersion P when:

- B answered calls with P at least ``min_calls`` times with status ``ok`` (through the ledger: the call
  succeeded; from a local journal: the attempt succeeded, so its output passed P's outputSchema), and
- B's share of ``ok`` calls with P is at least A's, and
- B's mean cost per ``ok`` call with P is lower than A's.

The saving shown is (A's mean - B's mean) x the Agent's calls with P that A answered. This is evidence
that B *can* do the job on the inputs it saw, not a quality comparison; every recommendation carries that
criterion in words (``Report.criterion``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..storage.ledger import LlmCall

__all__ = ["CRITERION", "Recommendation", "Report", "Spend", "build_report"]

CRITERION = (
    "no evaluation results are recorded, so none is claimed: a cheaper model is recommended when it answered "
    "the same PromptVersion successfully (status ok: the call succeeded and, for local runs, the output passed "
    "the outputSchema) at least {min_calls} times, at a success rate no lower than the current model's, for "
    "less per call"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Spend:
    """Totals of one group (a namespace, workflow, agent or model)."""

    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: int

    @property
    def cache_hit_rate(self) -> float:
        return self.cached / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "calls": self.calls, "inputTokens": self.input_tokens,
                "outputTokens": self.output_tokens, "costUsd": round(self.cost_usd, 6),
                "cacheHitRate": round(self.cache_hit_rate, 4)}


@dataclasses.dataclass(frozen=True, slots=True)
class Recommendation:
    agent: str
    prompt: str
    current_model: str
    current_usd_per_call: float
    current_ok_rate: float
    model: str
    usd_per_call: float
    ok_rate: float
    ok_calls: int
    saving_usd: float  # over the current model's calls seen

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "prompt": self.prompt, "currentModel": self.current_model,
                "currentUsdPerCall": round(self.current_usd_per_call, 8),
                "currentOkRate": round(self.current_ok_rate, 4), "model": self.model,
                "usdPerCall": round(self.usd_per_call, 8), "okRate": round(self.ok_rate, 4),
                "okCalls": self.ok_calls, "savingUsd": round(self.saving_usd, 6)}


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    calls: int
    cost_usd: float
    by_namespace: tuple[Spend, ...]
    by_workflow: tuple[Spend, ...]
    by_agent: tuple[Spend, ...]
    by_model: tuple[Spend, ...]
    recommendations: tuple[Recommendation, ...]
    criterion: str

    @property
    def cache_hit_rate(self) -> float:
        cached = sum(s.cached for s in self.by_model)
        return cached / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "costUsd": round(self.cost_usd, 6), "cacheHitRate": round(self.cache_hit_rate, 4),
                "byNamespace": [s.to_dict() for s in self.by_namespace],
                "byWorkflow": [s.to_dict() for s in self.by_workflow],
                "byAgent": [s.to_dict() for s in self.by_agent], "byModel": [s.to_dict() for s in self.by_model],
                "recommendations": [r.to_dict() for r in self.recommendations],
                "recommendationCriterion": self.criterion}


def _spend(calls: Sequence[LlmCall], key: Callable[[LlmCall], str]) -> tuple[Spend, ...]:
    groups: dict[str, list[LlmCall]] = defaultdict(list)
    for call in calls:
        groups[key(call)].append(call)
    out = [Spend(k, len(g), sum(c.input_tokens for c in g), sum(c.output_tokens for c in g),
                 sum(c.cost_usd for c in g), sum(1 for c in g if c.cached)) for k, g in groups.items()]
    return tuple(sorted(out, key=lambda s: (-s.cost_usd, s.key)))


@dataclasses.dataclass
class _ModelOnPrompt:
    calls: int = 0
    ok: int = 0
    ok_cost: float = 0.0

    @property
    def ok_rate(self) -> float:
        return self.ok / self.calls if self.calls else 0.0

    @property
    def per_call(self) -> float:
        return self.ok_cost / self.ok if self.ok else float("inf")


def _recommendations(calls: Sequence[LlmCall], min_calls: int) -> list[Recommendation]:
    # Cache hits cost nothing and say nothing about the model: leave them out of the comparison.
    real = [c for c in calls if not c.cached and c.prompt]
    by_prompt: dict[str, dict[str, _ModelOnPrompt]] = defaultdict(lambda: defaultdict(_ModelOnPrompt))
    for call in real:
        stats = by_prompt[call.prompt][call.model_used]
        stats.calls += 1
        if call.status == "ok":
            stats.ok += 1
            stats.ok_cost += call.cost_usd
    uses: dict[tuple[str, str, str], int] = defaultdict(int)  # (agent, prompt, model answering) -> calls
    for call in real:
        uses[(call.agent, call.prompt, call.model_used)] += 1
    out = []
    for (agent, prompt, current), count in sorted(uses.items()):
        models = by_prompt[prompt]
        mine = models[current]
        if not mine.ok:
            continue
        best: tuple[str, _ModelOnPrompt] | None = None
        for other, stats in sorted(models.items()):
            if other == current or stats.ok < min_calls or stats.ok_rate < mine.ok_rate:
                continue
            if stats.per_call < mine.per_call and (best is None or stats.per_call < best[1].per_call):
                best = (other, stats)
        if best is not None:
            other, stats = best
            out.append(Recommendation(agent, prompt, current, mine.per_call, mine.ok_rate, other, stats.per_call,
                                      stats.ok_rate, stats.ok, (mine.per_call - stats.per_call) * count))
    return sorted(out, key=lambda r: -r.saving_usd)


def build_report(calls: Iterable[LlmCall], *, min_calls: int = 3) -> Report:
    """Spend, cache hit rates and recommendations over ``calls`` (see the module docstring)."""
    if min_calls < 1:
        raise ValueError(f"min_calls must be >= 1, got {min_calls}")
    rows = list(calls)
    return Report(
        calls=len(rows),
        cost_usd=sum(c.cost_usd for c in rows),
        by_namespace=_spend(rows, lambda c: c.namespace),
        by_workflow=_spend(rows, lambda c: f"{c.namespace}/{c.workflow}"),
        by_agent=_spend(rows, lambda c: f"{c.namespace}/{c.agent or '(none)'}"),
        by_model=_spend(rows, lambda c: c.model_used),
        recommendations=tuple(_recommendations(rows, min_calls)),
        criterion=CRITERION.format(min_calls=min_calls),
    )
