"""Quality drift detection on synthetic journals with a known shift: detection delay and false-alarm rate.

Each stream is the journal of one Agent × PromptVersion's llm step attempts (StepScheduled, one CostRecorded per
model call, StepSucceeded or StepFailed), fed through the operator's own path: agentflow.quality's SignalTracker
(journal events -> signals) and Monitor (the CUSUM drift test, default DriftSettings). Figures only; nothing is
asserted (tests/unit/quality/test_drift.py holds the detector to bounds).

    python bench/drift_bench.py [--seeds 100] [--before 400] [--after 2000] [--stationary 1000]
                                [--rate-threshold 9] [--value-threshold 14]

The baseline stream: 5 % of attempts fail (a fifth of those on the outputSchema), 10 % need a repair request (a
second model call), latency lognormal around 2 s (sigma 0.5), $0.002 a call (lognormal, sigma 0.3), a judge's
score N(0.80, 0.10) on each success. Scenarios, each a shift of one signal at attempt ``--before``::

    stationary          no shift: how many streams raise any alarm in ``--stationary`` attempts after the baseline
    failures 5->15%     failure rate x3
    schema 1->5%        failures on the outputSchema x5 (the failure rate rises with them)
    repairs 10->30%     repair requests x3
    latency x1.5        slower answers
    cost x1.5           a pricier model: dollars per success
    score 0.80->0.70    a worse judge score

Printed per scenario: streams whose shifted signal alarmed (within ``--after`` attempts), the median and 90th
percentile of the detection delay (attempts after the shift until that alarm), and false alarms: streams with an
alarm on any signal before the shift.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from agentflow.engine.values import Event, EventType
from agentflow.quality import Alarm, DriftSettings, Monitor, SignalTracker

E = EventType
SUBJECTS = {"draft": ("writer", "summarize-v2")}


@dataclasses.dataclass(frozen=True)
class Quality:
    failure: float = 0.05
    schema: float = 0.01
    repaired: float = 0.10
    latency: float = 2.0
    cost: float = 0.002
    score: float = 0.80


SCENARIOS: dict[str, tuple[str | None, Quality]] = {
    "stationary": (None, Quality()),
    "failures 5->15%": ("failure", Quality(failure=0.15)),
    "schema 1->5%": ("schema_failure", Quality(failure=0.09, schema=0.05)),
    "repairs 10->30%": ("repaired", Quality(repaired=0.30)),
    "latency x1.5": ("latency_seconds", Quality(latency=3.0)),
    "cost x1.5": ("cost_per_success_usd", Quality(cost=0.003)),
    "score 0.80->0.70": ("score", Quality(score=0.70)),
}


def attempt(r: random.Random, q: Quality, n: int, at: float) -> Iterator[Event]:
    """One attempt's journal events."""
    yield Event(E.step_scheduled, "draft", {"step": "draft", "kind": "llm", "attempt": n}, at)
    calls = 2 if r.random() < q.repaired else 1
    for i in range(calls):
        cost = q.cost * r.lognormvariate(0.0, 0.3)
        yield Event(E.cost_recorded, "draft", {"call": {"kind": "llm", "name": "m", "cost_usd": cost}}, at + i)
    end = at + q.latency * r.lognormvariate(0.0, 0.5)
    if r.random() < q.failure:
        error = "InvalidModelOutput" if r.random() < q.schema / q.failure else "UpstreamError"
        yield Event(E.step_failed, "draft", {"attempt": n, "error": {"type": error}}, end)
    else:
        score = min(1.0, max(0.0, r.gauss(q.score, 0.10)))
        yield Event(E.step_succeeded, "draft", {"attempt": n, "score": score}, end)


def stream(seed: int, signal: str | None, shifted: Quality, before: int, after: int,
           settings: DriftSettings) -> tuple[int | None, bool]:
    """(delay of the alarm on ``signal`` after the shift, or None; whether any alarm came before the shift)."""
    r = random.Random(seed)
    tracker, monitor = SignalTracker(), Monitor(settings)
    early = False
    for n in range(1, before + after + 1):
        q = Quality() if n <= before else shifted
        observations = tracker.observe("run", "team", SUBJECTS, attempt(r, q, n, n * 100.0))
        for change in monitor.update(observations):
            if not isinstance(change, Alarm):
                continue
            if n <= before:
                early = True
            elif signal is not None and change.signal == signal:
                return n - before, early
    return None, early


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--before", type=int, default=400, help="attempts before the shift (the baseline is the first "
                   f"{DriftSettings().warmup})")
    p.add_argument("--after", type=int, default=2000, help="attempts after the shift")
    p.add_argument("--stationary", type=int, default=1000, help="attempts after the baseline without a shift")
    p.add_argument("--rate-threshold", type=float, default=DriftSettings().rate_threshold)
    p.add_argument("--value-threshold", type=float, default=DriftSettings().value_threshold)
    args = p.parse_args()
    settings = DriftSettings(rate_threshold=args.rate_threshold, value_threshold=args.value_threshold)
    print(f"drift test: CUSUM, warmup {settings.warmup}, rate threshold {settings.rate_threshold}, value threshold "
          f"{settings.value_threshold} (allowance {settings.value_allowance}); {args.seeds} seeded streams each\n")
    print("| scenario | detected | delay p50 | delay p90 | false alarms |")
    print("| --- | --- | --- | --- | --- |")
    started = time.process_time()
    for name, (signal, shifted) in SCENARIOS.items():
        delays: list[int] = []
        early = 0
        for seed in range(args.seeds):
            if signal is None:
                _, alarmed = stream(seed, None, shifted, settings.warmup + args.stationary, 0, settings)
                early += alarmed
                continue
            delay, alarmed = stream(seed, signal, shifted, args.before, args.after, settings)
            early += alarmed
            if delay is not None:
                delays.append(delay)
        if signal is None:
            print(f"| {name} ({args.stationary} attempts after the baseline, 6 signals) | | | | "
                  f"{early}/{args.seeds} streams ({early / args.seeds:.0%}) |")
            continue
        delays.sort()
        p50 = statistics.median(delays) if delays else math.nan
        p90 = delays[min(len(delays) - 1, int(len(delays) * 0.9))] if delays else math.nan
        print(f"| {name} | {len(delays)}/{args.seeds} | {p50:.0f} | {p90:.0f} | "
              f"{early}/{args.seeds} before the shift ({args.before - settings.warmup} attempts) |")
    print(f"\n{time.process_time() - started:.1f} s CPU")


if __name__ == "__main__":
    main()
