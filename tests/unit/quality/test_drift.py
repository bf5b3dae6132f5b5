"""The drift test (agentflow.quality.drift) on synthetic streams with seeded RNGs: without a shift it stays quiet
at the documented rate, a shift in the worse direction is found within bounds, a better one and a lone outlier are
not alarms, and the Monitor re-learns its baseline after an alarm and clears the drift after ``hold``."""

from __future__ import annotations

import random
from collections.abc import Callable

from agentflow.quality import Alarm, Cleared, DriftSettings, Monitor, Observation, Subject
from agentflow.quality.drift import detector

Stream = Callable[[random.Random], float]
SETTINGS = DriftSettings()
SUBJECT = Subject("team", "writer", "summarize-v2")


def rate(p: float) -> Stream:
    return lambda r: 1.0 if r.random() < p else 0.0


def latency(scale: float = 1.0) -> Stream:
    return lambda r: scale * r.lognormvariate(1.0, 0.5)


def score(mean: float) -> Stream:
    return lambda r: min(1.0, max(0.0, r.gauss(mean, 0.1)))


def false_alarm_rate(signal: str, stream: Stream, seeds: int = 100, after: int = 1000) -> float:
    alarmed = 0
    for seed in range(seeds):
        r, d = random.Random(seed), detector(signal, SETTINGS)
        if any(d.update(stream(r)) is not None for _ in range(SETTINGS.warmup + after)):
            alarmed += 1
    return alarmed / seeds


def delays(signal: str, before: Stream, after: Stream, seeds: int = 50, limit: int = 3000) -> list[int]:
    """Observations after the shift until the alarm, per seed (limit + 1: never)."""
    out = []
    for seed in range(seeds):
        r, d = random.Random(1000 + seed), detector(signal, SETTINGS)
        for _ in range(SETTINGS.warmup):
            d.update(before(r))
        out.append(next((i for i in range(1, limit + 1) if d.update(after(r)) is not None), limit + 1))
    return sorted(out)


def test_no_shift_no_alarm_at_the_documented_rate() -> None:
    # drift.py documents at most about 4 % of stationary streams per signal over 1,000 attempts after the baseline
    for signal, stream in (("failure", rate(0.05)), ("failure", rate(0.2)), ("schema_failure", rate(0.01)),
                           ("latency_seconds", latency()), ("score", score(0.8))):
        assert false_alarm_rate(signal, stream) <= 0.06, (signal, stream)


def test_a_rise_of_the_failure_rate_is_found_within_bounds() -> None:
    found = delays("failure", rate(0.05), rate(0.15))
    assert found[-1] <= 1000 and found[len(found) // 2] <= 300 and found[int(len(found) * 0.9)] <= 500, found


def test_slower_answers_and_lower_scores_are_found_within_bounds() -> None:
    slow = delays("latency_seconds", latency(), latency(1.5))
    assert slow[-1] <= 300 and slow[len(slow) // 2] <= 70 and slow[int(len(slow) * 0.9)] <= 120, slow
    worse = delays("score", score(0.8), score(0.7))
    assert worse[-1] <= 100 and worse[len(worse) // 2] <= 45, worse


def test_better_quality_and_a_lone_outlier_are_not_alarms() -> None:
    assert delays("failure", rate(0.2), rate(0.05), seeds=20, limit=1000) == [1001] * 20
    assert delays("latency_seconds", latency(), latency(0.5), seeds=20, limit=1000) == [1001] * 20
    r, d = random.Random(7), detector("latency_seconds", SETTINGS)
    for _ in range(SETTINGS.warmup + 50):
        assert d.update(latency()(r)) is None
    assert d.update(3600.0) is None  # one answer an hour late


def test_the_monitor_alarms_once_relearns_and_clears_after_hold() -> None:
    settings = DriftSettings(warmup=50, hold=100)
    monitor = Monitor(settings)
    r = random.Random(3)
    feed = lambda p, n: monitor.update(Observation(SUBJECT, "failure", rate(p)(r)) for _ in range(n))  # noqa: E731
    assert feed(0.02, 50 + 300) == []
    changes = feed(0.5, 60)
    alarms = [c for c in changes if isinstance(c, Alarm)]
    assert len(alarms) == 1, changes  # then a new baseline is learnt from the new level
    alarm = alarms[0]
    assert alarm.baseline < 0.1 and alarm.current > 0.3 and alarm.since > 0
    assert alarm.message.startswith("failure of PromptVersion summarize-v2 ")
    assert monitor.drifting("team", "writer") == [alarm]
    assert monitor.drifting("team", "other") == []
    changes = feed(0.5, 200)
    assert changes == [Cleared(SUBJECT, "failure")]
    assert monitor.drifting("team", "writer") == []
