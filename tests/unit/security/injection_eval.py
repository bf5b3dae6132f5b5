"""Precision, recall and latency of the prompt-injection screen on the labelled corpus.

    python -m tests.unit.security.injection_eval                 the held-out test split (what the README reports)
    python -m tests.unit.security.injection_eval --split dev     the split the rules were tuned on
    python -m tests.unit.security.injection_eval --errors        also list the misclassified cases

The corpus (injection_corpus.jsonl) has one case per line: id, split (dev|test), label (injection|benign),
class, source (tool_output|input), lang, text, and for encoded cases a note saying what they hide. The
test split was written before the rules were tuned and is never used to tune them. A case counts as
detected when the default policy (threshold 0.5) would act on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agentflow.models.agent import InjectionPolicy
from agentflow.security import scan

CORPUS = Path(__file__).with_name("injection_corpus.jsonl")


def load(split: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


@dataclasses.dataclass
class Result:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    by_class: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    errors: list[tuple[dict[str, Any], float]] = dataclasses.field(default_factory=list)
    ms_per_kb: float = 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def evaluate(rows: list[dict[str, Any]], threshold: float | None = None) -> Result:
    threshold = InjectionPolicy().threshold if threshold is None else threshold
    out = Result()
    for r in rows:
        score = scan(r["text"], r["source"]).score
        flagged, attack = score >= threshold, r["label"] == "injection"
        counts = out.by_class.setdefault(f"{r['label']}/{r['class']}", Counter())
        counts["n"] += 1
        counts["flagged"] += flagged
        if flagged and attack:
            out.tp += 1
        elif flagged:
            out.fp += 1
        elif attack:
            out.fn += 1
        else:
            out.tn += 1
        if flagged != attack:
            out.errors.append((r, score))
    out.ms_per_kb = latency_ms_per_kb(rows)
    return out


def latency_ms_per_kb(rows: list[dict[str, Any]], repeat: int = 5) -> float:
    """Milliseconds per KB of UTF-8 text, scanning the cases one by one (best of ``repeat`` rounds)."""
    kb = sum(len(r["text"].encode()) for r in rows) / 1024
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for r in rows:
            scan(r["text"], r["source"])
        best = min(best, time.perf_counter() - started)
    return best * 1000 / kb


def report(result: Result, split: str) -> str:
    lines = [f"split {split}: precision {result.precision:.2f} ({result.tp}/{result.tp + result.fp}), "
             f"recall {result.recall:.2f} ({result.tp}/{result.tp + result.fn}), "
             f"latency {result.ms_per_kb:.2f} ms/KB (one core, scan() per case)",
             f"{'class':<36}{'cases':>6}{'flagged':>9}{'rate':>7}"]
    for name in sorted(result.by_class):
        c = result.by_class[name]
        kind = "recall" if name.startswith("injection/") else "false positives"
        lines.append(f"{name:<36}{c['n']:>6}{c['flagged']:>9}{c['flagged'] / c['n']:>7.2f}  {kind}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=["dev", "test"], default="test")
    parser.add_argument("--errors", action="store_true", help="list the misclassified cases")
    args = parser.parse_args()
    result = evaluate(load(args.split))
    print(report(result, args.split))
    if args.errors:
        for r, score in result.errors:
            print(f"  {r['id']} {r['label']}/{r['class']} score {score:.2f}: {r['text'][:110]!r}")


if __name__ == "__main__":
    main()
