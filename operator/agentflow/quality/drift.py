"""The drift test: a one-sided CUSUM per Agent × PromptVersion × signal, against a baseline it learns (PURE).

For each signal (agentflow.quality.signals) of each subject the :class:`Monitor` keeps one detector:

1. **Baseline.** The first ``warmup`` observations (200) give the reference: the rate ``p0`` of a 0/1 signal
   (smoothed, ``(k + 1) / (n + 2)``, so a baseline without failures is not 0), or the mean and standard deviation
   of a value (for latency and cost, whose spread grows with their level, of ``log(x + 1 % of the baseline
   mean)``: scale-free, and defined for a cost of 0; the deviation is at least ``min_sigma``, 0.05: a 5 % change).
2. **CUSUM** (Page, 1954), one-sided in the direction that is worse: a rate that rises, latency or cost that
   rises, a score that drops. A 0/1 signal adds the log-likelihood ratio of "the rate is now
   ``p1 = max(2 p0, p0 + 0.05)``" against ``p0`` (Bernoulli CUSUM): ``S = max(0, S + log(p1/p0))`` on a 1,
   ``S = max(0, S + log((1-p1)/(1-p0)))`` on a 0, and alarms at ``S > rate_threshold`` (11). A value adds its
   standardized deviation less an allowance: ``S = max(0, S + clip(z, ±4) - 0.5)``, alarming at
   ``S > value_threshold`` (18): a sustained shift of one standard deviation is found in about 40 observations,
   and a single outlier (clipped at 4) never alarms.
3. **Alarm.** :class:`Alarm` names the baseline and the level since the change began (the observations since
   ``S`` last was 0: CUSUM's estimate of the change point). The detector then learns a new baseline from the next
   ``warmup`` observations, so a lasting change alarms once. The subject stays *drifting* on that signal until
   ``hold`` (200) observations pass without another alarm, then :class:`Cleared`.

Measured on synthetic journals (``bench/drift_bench.py``, the README's Quality drift section): per signal, at most
about 4 % of stationary streams raise a false alarm in the 1,000 attempts after their baseline (the baseline's own
estimation error is most of it), 8 % for the six signals of one Agent × PromptVersion together; a failure rate going
from 5 % to 15 % is found in a median of 175 attempts, latency or cost 1.5 times higher in 36 to 45, a judge's score
dropping by one standard deviation in 36. ``tests/unit/quality/test_drift.py`` holds the detectors to bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from .signals import RATE_SIGNALS, Observation, Subject

__all__ = ["Alarm", "Cleared", "DriftSettings", "Monitor", "RateCusum", "ValueCusum"]

_LOG_SIGNALS = frozenset({"latency_seconds", "cost_per_success_usd"})
_LOWER_IS_WORSE = frozenset({"score"})


@dataclasses.dataclass(frozen=True, slots=True)
class DriftSettings:
    warmup: int = 200
    """Observations that make a baseline."""
    rate_threshold: float = 11.0
    """Alarm level of the Bernoulli CUSUM (log-likelihood ratio)."""
    rate_shift: float = 0.05
    """The smallest rise of a rate the test is tuned for: p1 = max(2 p0, p0 + rate_shift)."""
    value_allowance: float = 0.5
    """k: half the shift (in baseline standard deviations) the value CUSUM is tuned for."""
    value_threshold: float = 18.0
    """Alarm level of the value CUSUM, in baseline standard deviations."""
    clip: float = 4.0
    """Largest standardized deviation one observation adds."""
    min_sigma: float = 0.05
    """Floor of a value's baseline standard deviation."""
    hold: int = 200
    """Observations a signal stays drifting after its last alarm."""


@dataclasses.dataclass(frozen=True, slots=True)
class Alarm:
    subject: Subject
    signal: str
    baseline: float
    """The rate, or the mean value, of the baseline."""
    current: float
    """The rate, or the mean value, since the change began."""
    since: int
    """Observations since the change began (CUSUM's estimate)."""

    @property
    def message(self) -> str:
        return (f"{self.signal} of PromptVersion {self.subject.prompt} {_show(self.signal, self.baseline)} -> "
                f"{_show(self.signal, self.current)} over the last {self.since} attempt(s)")


@dataclasses.dataclass(frozen=True, slots=True)
class Cleared:
    subject: Subject
    signal: str


def _show(signal: str, value: float) -> str:
    if signal in RATE_SIGNALS:
        return f"{value:.1%}"
    if signal == "cost_per_success_usd":
        return f"${value:.4g}"
    if signal == "latency_seconds":
        return f"{value:.3g}s"
    return f"{value:.3g}"


class RateCusum:
    """Bernoulli CUSUM for a rise of the rate of a 0/1 signal."""

    __slots__ = ("_down", "_n", "_ones", "_run_n", "_run_ones", "_up", "p0", "s", "settings")

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self.p0: float | None = None
        self.s = 0.0
        self._n = self._ones = self._run_n = self._run_ones = 0
        self._up = self._down = 0.0

    def update(self, x: float) -> tuple[float, float, int] | None:
        """Take one observation; (baseline, current, since) on an alarm."""
        one = x >= 0.5
        if self.p0 is None:
            self._n += 1
            self._ones += one
            if self._n >= self.settings.warmup:
                p0 = (self._ones + 1) / (self._n + 2)
                p1 = min(0.999, max(2 * p0, p0 + self.settings.rate_shift))
                self.p0 = p0
                self._up, self._down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
            return None
        self.s = max(0.0, self.s + (self._up if one else self._down))
        if self.s == 0.0:
            self._run_n = self._run_ones = 0
        else:
            self._run_n += 1
            self._run_ones += one
        if self.s > self.settings.rate_threshold:
            return self._ones / self._n, self._run_ones / max(1, self._run_n), self._run_n
        return None


class ValueCusum:
    """CUSUM of standardized values for a shift in the worse direction."""

    __slots__ = ("_offset", "_run_n", "_run_sum", "_warm", "log", "mu", "s", "settings", "sigma", "sign")

    def __init__(self, settings: DriftSettings, *, log: bool, lower_is_worse: bool) -> None:
        self.settings = settings
        self.log = log
        self.sign = -1.0 if lower_is_worse else 1.0
        self.mu: float | None = None
        self.sigma = settings.min_sigma
        self.s = 0.0
        self._warm: list[float] = []
        self._offset = 0.0
        self._run_n = 0
        self._run_sum = 0.0

    def _t(self, x: float) -> float:
        # log(x + 1 % of the baseline mean): scale-free for seconds and dollars alike, and defined at 0
        return math.log(max(0.0, x) + self._offset) if self.log else x

    def update(self, x: float) -> tuple[float, float, int] | None:
        if self.mu is None:
            self._warm.append(x)
            if len(self._warm) >= self.settings.warmup:
                mean = sum(self._warm) / len(self._warm)
                self._offset = max(0.01 * mean, 1e-12)
                ts = [self._t(v) for v in self._warm]
                self.mu = sum(ts) / len(ts)
                sd = math.sqrt(sum((t - self.mu) ** 2 for t in ts) / (len(ts) - 1)) if len(ts) > 1 else 0.0
                self.sigma = max(sd, self.settings.min_sigma)
            return None
        clip = self.settings.clip
        z = max(-clip, min(clip, self.sign * (self._t(x) - self.mu) / self.sigma))
        self.s = max(0.0, self.s + z - self.settings.value_allowance)
        if self.s == 0.0:
            self._run_n, self._run_sum = 0, 0.0
        else:
            self._run_n += 1
            self._run_sum += x
        if self.s > self.settings.value_threshold:
            return sum(self._warm) / len(self._warm), self._run_sum / max(1, self._run_n), self._run_n
        return None


def detector(signal: str, settings: DriftSettings) -> RateCusum | ValueCusum:
    if signal in RATE_SIGNALS:
        return RateCusum(settings)
    return ValueCusum(settings, log=signal in _LOG_SIGNALS, lower_is_worse=signal in _LOWER_IS_WORSE)


class Monitor:
    """Detectors of every (subject, signal) seen, and which of them are drifting now."""

    def __init__(self, settings: DriftSettings | None = None) -> None:
        self.settings = settings or DriftSettings()
        self._detectors: dict[tuple[Subject, str], RateCusum | ValueCusum] = {}
        self._drifting: dict[tuple[Subject, str], tuple[Alarm, int]] = {}

    def update(self, observations: Iterable[Observation]) -> list[Alarm | Cleared]:
        """Take observations in order; the alarms raised and the drifts cleared by them."""
        out: list[Alarm | Cleared] = []
        for o in observations:
            key = (o.subject, o.signal)
            found = self._detectors.get(key)
            if found is None:
                found = self._detectors[key] = detector(o.signal, self.settings)
            hit = found.update(o.value)
            if hit is not None:
                alarm = Alarm(o.subject, o.signal, *hit)
                self._detectors[key] = detector(o.signal, self.settings)  # a new baseline from here on
                self._drifting[key] = (alarm, 0)
                out.append(alarm)
            elif key in self._drifting:
                alarm, quiet = self._drifting[key]
                if quiet + 1 >= self.settings.hold:
                    del self._drifting[key]
                    out.append(Cleared(o.subject, o.signal))
                else:
                    self._drifting[key] = (alarm, quiet + 1)
        return out

    def drifting(self, namespace: str, agent: str) -> list[Alarm]:
        """The last alarm of each drifting signal of an Agent's PromptVersions, in order."""
        return sorted((a for (s, _), (a, _) in self._drifting.items() if (s.namespace, s.agent) == (namespace, agent)),
                      key=lambda a: (a.subject.prompt, a.signal))
