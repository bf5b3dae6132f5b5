"""Recall of the PII detector on the labelled set (tests/unit/security/pii_corpus.py).

    .venv/bin/python -m tests.unit.security.recall          prints recall per entity type

A planted value counts as found when, after redaction with the default policy's entity types and
minScore, it no longer appears in the text, and as typed when its token names the right entity type.
"""

from __future__ import annotations

import time
from collections import Counter

from agentflow.models.agent import PiiPolicy
from agentflow.security import PresidioDetector, Redaction, token_for

from .pii_corpus import BENIGN, CASES

KEY = b"\x01" * 32


def measure() -> tuple[dict[str, tuple[int, int, int]], int]:
    """{entity: (planted, found, typed)} and the number of values redacted in the benign sentences."""
    policy = PiiPolicy()
    detector = PresidioDetector()
    planted: Counter[str] = Counter()
    found: Counter[str] = Counter()
    typed: Counter[str] = Counter()
    for entity, value, sentence in CASES:
        redaction = Redaction(detector, KEY, policy.entities, policy.min_score)
        out = redaction.redact_text(sentence)
        planted[entity] += 1
        if value not in out:
            found[entity] += 1
            if token_for(KEY, entity, value) in out:
                typed[entity] += 1
    false_positives = 0
    for sentence in BENIGN:
        redaction = Redaction(detector, KEY, policy.entities, policy.min_score)
        redaction.redact_text(sentence)
        false_positives += sum(redaction.counts.values())
    return {e: (planted[e], found[e], typed[e]) for e in planted}, false_positives


def main() -> None:
    started = time.perf_counter()
    PresidioDetector.engine()
    loaded = time.perf_counter() - started
    results, false_positives = measure()
    print(f"analyzer load: {loaded:.2f}s")
    print(f"{'entity':<15}{'planted':>8}{'found':>7}{'recall':>8}{'typed':>7}")
    total = [0, 0]
    for entity, (n, found, typed) in results.items():
        total[0] += n
        total[1] += found
        print(f"{entity:<15}{n:>8}{found:>7}{found / n:>8.2f}{typed:>7}")
    print(f"{'all':<15}{total[0]:>8}{total[1]:>7}{total[1] / total[0]:>8.2f}")
    print(f"values redacted in {len(BENIGN)} benign sentences: {false_positives}")


if __name__ == "__main__":
    main()
