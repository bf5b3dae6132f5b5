"""The canary gate of a PromptRollout, simulated: false promotion rate and runs needed to detect a 10-point drop.

Each trial is one rollout of a candidate against its stable version, decided by the operator's own pure gate
(agentflow.prompts.canary.decide) exactly as agentflow.services.canary calls it: runs arrive one at a time, each
gets the candidate with the step's weight (the hash split, drawn here from a seeded RNG), each run's llm attempt
gives its samples, and the gate is asked after every run. A trial ends when the rollout is Promoted or RolledBack
(or after ``--max-runs`` runs: undecided). Figures only; nothing is asserted (tests/unit/prompts/test_canary.py
holds the gate to known shifts).

    python bench/canary_bench.py [--trials 200] [--seed 7] [--min-samples 100] [--confidence 0.95]
                                 [--max-degradation 0.0] [--max-runs 20000]

Scenarios (the stable version's quality is the baseline)::

    schema equal            schemaFailureRate 10 % for both: promotion is right, a rollback is false
    schema +10 points       the candidate's answers break the outputSchema 20 % of the time (stable 10 %)
    judge equal             judgeScore N(0.80, 0.15) for both (clipped to 0..1)
    judge -10 points        the candidate's judge score N(0.70, 0.15)

Printed per scenario: promoted, rolled back, undecided (share of trials), and the runs (all versions) and the
candidate's runs until the decision (median, 90th percentile); next to the thresholds: steps and their minRuns,
minSamples, confidence and the level of each one-sided test (alpha split over steps x gates), maxDegradation.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from agentflow.models import PromptRolloutSpec
from agentflow.prompts.canary import RolloutState, Sample, VersionStats, alpha_of, decide

Draw = Callable[[random.Random], float]


def rate(p: float) -> Draw:
    return lambda rng: 1.0 if rng.random() < p else 0.0


def score(mean: float, sd: float = 0.15) -> Draw:
    return lambda rng: min(1.0, max(0.0, rng.gauss(mean, sd)))


SCENARIOS: dict[str, tuple[str, Draw, Draw, bool]] = {
    # name: (signal, stable, candidate, candidate is worse)
    "schema equal": ("schemaFailureRate", rate(0.10), rate(0.10), False),
    "schema +10 points": ("schemaFailureRate", rate(0.10), rate(0.20), True),
    "judge equal": ("judgeScore", score(0.80), score(0.80), False),
    "judge -10 points": ("judgeScore", score(0.80), score(0.70), True),
}
GATE_OK = ("Pass", "EvaluationPassed", "simulated")


def rollout_spec(signal: str, args: argparse.Namespace) -> PromptRolloutSpec:
    return PromptRolloutSpec.model_validate({
        "prompt": "t", "stable": "t-v1", "candidate": "t-v2",
        "steps": [{"weight": 10, "minRuns": 20}, {"weight": 25, "minRuns": 50}, {"weight": 50, "minRuns": 100}],
        "onlineGates": [{"signal": signal, "maxDegradation": args.max_degradation}],
        "minSamples": args.min_samples, "confidence": args.confidence})


def trial(spec: PromptRolloutSpec, signal: str, stable: Draw, candidate: Draw, rng: random.Random,
          max_runs: int) -> tuple[str, int, int]:
    """One rollout: (outcome, runs, candidate runs) at its decision."""
    d = decide(spec, RolloutState(), 0.0, GATE_OK, VersionStats(), VersionStats())
    state = RolloutState(d.phase, d.step_index, 0.0)
    weight = d.weight
    samples = {"c": Sample(), "s": Sample()}
    step_runs = {"c": 0, "s": 0}
    runs = candidate_runs = 0
    while runs < max_runs:
        runs += 1
        who = "c" if rng.random() * 100 < weight else "s"
        candidate_runs += who == "c"
        samples[who] = samples[who].add((candidate if who == "c" else stable)(rng))
        step_runs[who] += 1
        d = decide(spec, state, float(runs), GATE_OK, VersionStats(step_runs["c"], {signal: samples["c"]}),
                   VersionStats(step_runs["s"], {signal: samples["s"]}))
        if d.phase in ("Promoted", "RolledBack"):
            return d.phase, runs, candidate_runs
        if d.new_step:
            state, weight, step_runs = RolloutState(d.phase, d.step_index, float(runs)), d.weight, {"c": 0, "s": 0}
    return "Undecided", runs, candidate_runs


def pct(values: list[int], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return str(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-samples", type=int, default=100)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--max-degradation", type=float, default=0.0)
    parser.add_argument("--max-runs", type=int, default=20000)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = rollout_spec("schemaFailureRate", args)
    steps = ", ".join(f"{s.weight}% (minRuns {s.min_runs})" for s in spec.steps)
    print(f"thresholds: steps {steps}; minSamples {spec.min_samples}; confidence {spec.confidence:g} -> "
          f"alpha {alpha_of(spec):.4f} per one-sided test ({len(spec.steps)} steps x 1 gate); maxDegradation "
          f"{args.max_degradation:g}; {args.trials} trials, seed {args.seed}")
    print(f"{'scenario':<20} {'promoted':>9} {'rolled back':>12} {'undecided':>10}  {'runs p50':>8} {'p90':>6}  "
          f"{'candidate runs p50':>18} {'p90':>6}")
    for name, (signal, stable, candidate, worse) in SCENARIOS.items():
        spec = rollout_spec(signal, args)
        rng = random.Random(f"{args.seed}/{name}")
        outcomes: dict[str, int] = {"Promoted": 0, "RolledBack": 0, "Undecided": 0}
        runs: list[int] = []
        exposed: list[int] = []
        for _ in range(args.trials):
            outcome, n, c = trial(spec, signal, stable, candidate, rng, args.max_runs)
            outcomes[outcome] += 1
            if outcome == ("RolledBack" if worse else "Promoted"):
                runs.append(n)
                exposed.append(c)
        share = {k: v / args.trials for k, v in outcomes.items()}
        label = "false promotion" if worse else "false rollback"
        wrong = share["Promoted"] if worse else share["RolledBack"]
        print(f"{name:<20} {share['Promoted']:>9.1%} {share['RolledBack']:>12.1%} {share['Undecided']:>10.1%}  "
              f"{pct(runs, 0.5):>8} {pct(runs, 0.9):>6}  {pct(exposed, 0.5):>18} {pct(exposed, 0.9):>6}   "
              f"{label} {wrong:.1%}")
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
