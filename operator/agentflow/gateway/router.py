"""Which model answers a call: fallback order or a Thompson-sampling bandit, with cooldowns. Pure.

The candidates of a call are its Agent's ``model.name`` then ``model.fallbacks``, minus the models whose
provider ``dataResidency.allowedProviders`` does not list (:func:`candidates_for`). The router orders them;
the gateway tries them in that order until one answers, and reports every outcome back (:meth:`Router.observe`).

Modes (``Agent.spec.model.routing``)::

    fallback   the declared order (primary first); models cooling down go last
    bandit     Thompson sampling: one draw from each model's Beta posterior, highest first; cooling models last

Reward of one call, in [0, 1]: 0 for a failure, else ``quality * w_q + cost_score * w_c + latency_score * w_l``
(weights sum to 1) with ``cost_score = 1 / (1 + cost_usd / cost_scale_usd)`` and ``latency_score =
1 / (1 + latency_ms / latency_scale_ms)``. The posterior of (agent, model) is Beta(1 + sum r, 1 + sum (1 - r))
(the usual Bernoulli trick for bounded rewards), so a model that is cheaper and as reliable collects more
reward and ends up picked nearly always, while the others keep being explored a little.

Cooldown: a model that failed ``cooldown_after`` times in a row (retryable failures only: a bad request says
nothing about the provider) is skipped for ``cooldown_seconds``; after that one call may try it again, and
a success clears its count. The unit is the model string (one deployment, as litellm's Router does), so two
models of one provider cool down separately. A call is never refused because of cooldowns: when every
candidate cools down, they are all tried, the one whose cooldown ends first first.

Everything here is deterministic given the RNG and the clock values passed in; the state lives in the
Router object of one process (replicas learn separately).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

__all__ = [
    "Outcome",
    "RewardWeights",
    "Router",
    "RoutingDecision",
    "RoutingMode",
    "candidates_for",
    "provider_of",
]

RoutingMode = Literal["fallback", "bandit"]


class Rng(Protocol):
    """What the router draws from (random.Random has it); passed in, never global."""

    def betavariate(self, alpha: float, beta: float) -> float: ...


def provider_of(model: str) -> str:
    """The provider in litellm's naming: ``anthropic/claude-3`` -> ``anthropic``; a bare name is ``openai``."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def candidates_for(model: str, fallbacks: Sequence[str], allowed_providers: Sequence[str]) -> list[str]:
    """The models a call may use, in declared order, without duplicates, filtered by the allowed providers.

    An empty result means the Agent's data-residency rules exclude every model it names; the caller refuses.
    """
    ordered: list[str] = []
    for name in (model, *fallbacks):
        if name and name not in ordered and (not allowed_providers or provider_of(name) in allowed_providers):
            ordered.append(name)
    return ordered


@dataclasses.dataclass(frozen=True, slots=True)
class RewardWeights:
    """How success/quality, cost and latency mix into one reward (normalized to sum to 1)."""

    quality: float = 0.5
    cost: float = 0.3
    latency: float = 0.2
    cost_scale_usd: float = 0.001
    """The cost at which the cost score is 0.5 (a typical small call)."""
    latency_scale_ms: float = 2000.0
    """The latency at which the latency score is 0.5."""

    def __post_init__(self) -> None:
        parts = (self.quality, self.cost, self.latency)
        if min(parts) < 0 or sum(parts) <= 0:
            raise ValueError("RewardWeights: quality, cost and latency must be >= 0 and not all 0")
        if self.cost_scale_usd <= 0 or self.latency_scale_ms <= 0:
            raise ValueError("RewardWeights: cost_scale_usd and latency_scale_ms must be > 0")

    def reward(self, outcome: Outcome) -> float:
        if not outcome.ok:
            return 0.0
        total = self.quality + self.cost + self.latency
        cost_score = 1.0 / (1.0 + max(0.0, outcome.cost_usd) / self.cost_scale_usd)
        latency_score = 1.0 / (1.0 + max(0.0, outcome.latency_ms) / self.latency_scale_ms)
        quality = min(1.0, max(0.0, outcome.quality))
        return (self.quality * quality + self.cost * cost_score + self.latency * latency_score) / total


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one call to one model did. ``retryable`` only matters for failures (cooldowns count those)."""

    ok: bool
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    quality: float = 1.0
    retryable: bool = True
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The order to try, and why; ``to_dict()`` is what the call log and audit record keep."""

    mode: RoutingMode
    candidates: tuple[str, ...]
    order: tuple[str, ...]
    samples: Mapping[str, float]
    cooling: Mapping[str, float]  # model -> seconds of cooldown left
    why: str

    @property
    def pick(self) -> str:
        return self.order[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "candidates": list(self.candidates),
            "order": list(self.order),
            "pick": self.pick,
            "samples": {k: round(v, 6) for k, v in self.samples.items()},
            "cooling": {k: round(v, 3) for k, v in self.cooling.items()},
            "why": self.why,
        }


@dataclasses.dataclass(slots=True)
class _Arm:
    alpha: float = 1.0
    beta: float = 1.0
    calls: int = 0


@dataclasses.dataclass(slots=True)
class _Health:
    failures: int = 0  # consecutive retryable failures
    cooling_until: float = 0.0


class Router:
    """Orders candidates and learns from outcomes. ``arm`` keys (usually "namespace/agent") keep the bandit's
    statistics per Agent; cooldowns are per model across Agents."""

    def __init__(
        self,
        *,
        weights: RewardWeights | None = None,
        cooldown_after: int = 3,
        cooldown_seconds: float = 30.0,
        max_arms: int = 10_000,
    ) -> None:
        if cooldown_after < 1:
            raise ValueError("Router: cooldown_after must be >= 1")
        if cooldown_seconds < 0:
            raise ValueError("Router: cooldown_seconds must be >= 0")
        self.weights = weights or RewardWeights()
        self.cooldown_after = cooldown_after
        self.cooldown_seconds = cooldown_seconds
        self._max_arms = max_arms
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._health: dict[str, _Health] = {}

    def cooling(self, model: str, now: float) -> float:
        """Seconds of cooldown ``model`` has left at ``now`` (0 when it may be tried)."""
        health = self._health.get(model)
        return max(0.0, health.cooling_until - now) if health is not None else 0.0

    def posterior(self, arm: str, model: str) -> tuple[float, float]:
        """(alpha, beta) of the Beta posterior of ``model`` for ``arm``."""
        state = self._arms.get((arm, model))
        return (state.alpha, state.beta) if state is not None else (1.0, 1.0)

    def decide(self, arm: str, candidates: Sequence[str], mode: RoutingMode, now: float, rng: Rng) -> RoutingDecision:
        """The order in which to try ``candidates`` (non-empty) for a call of ``arm``."""
        if not candidates:
            raise ValueError("Router.decide: no candidates; the caller must refuse the call first")
        cooling = {m: left for m in candidates if (left := self.cooling(m, now)) > 0}
        samples: dict[str, float] = {}
        if mode == "bandit":
            for model in candidates:
                alpha, beta = self.posterior(arm, model)
                samples[model] = rng.betavariate(alpha, beta)
            ranked = sorted(candidates, key=lambda m: -samples[m])
        elif mode == "fallback":
            ranked = list(candidates)
        else:
            raise ValueError(f"Router.decide: routing mode {mode!r} is not fallback or bandit")
        healthy = [m for m in ranked if m not in cooling]
        resting = sorted((m for m in ranked if m in cooling), key=lambda m: cooling[m])
        order = tuple(healthy + resting)
        if mode == "bandit":
            why = f"Thompson sampling: {order[0]} drew the highest sample ({samples[order[0]]:.3f})"
        else:
            why = f"fallback order: {order[0]} is the first declared model"
        if cooling:
            if healthy:
                why += f"; cooling down, tried last: {', '.join(resting)}"
            else:
                why += "; every candidate is cooling down, so they are tried by the end of their cooldown"
        return RoutingDecision(mode, tuple(candidates), order, samples, cooling, why)

    def observe(self, arm: str, model: str, outcome: Outcome, now: float) -> None:
        """Learn from one call of ``model`` for ``arm`` that ended at ``now``."""
        if outcome.ok or outcome.retryable:
            # A non-retryable failure (bad request, bad credentials) is the caller's mistake, not the model's.
            reward = self.weights.reward(outcome)
            key = (arm, model)
            state = self._arms.get(key)
            if state is None:
                if len(self._arms) >= self._max_arms:
                    self._arms.pop(next(iter(self._arms)))
                state = self._arms[key] = _Arm()
            state.alpha += reward
            state.beta += 1.0 - reward
            state.calls += 1
        health = self._health.setdefault(model, _Health())
        if outcome.ok:
            health.failures = 0
            health.cooling_until = 0.0
        elif outcome.retryable:
            health.failures += 1
            if health.failures >= self.cooldown_after:
                # The count stays at the threshold: after the cooldown one more failure cools it down again.
                health.cooling_until = now + self.cooldown_seconds
