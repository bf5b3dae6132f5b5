"""Recall and false positives of the PII detector on the labelled sets (tests/unit/security/pii_corpus.py).

    .venv/bin/python -m tests.unit.security.recall             recall per entity type (plain and evasive
                                                                spellings), false positives on benign text
    .venv/bin/python -m tests.unit.security.recall --examples  also print each false positive

A planted value counts as found when, after redaction with the default policy's entity types and
minScore, it no longer appears in the text, and as typed when its token names the right entity type. A
benign sentence counts as a false positive of an entity type when anything in it is redacted as that type;
the rate is per sentence. BENIGN_DEV was looked at while choosing the filters, BENIGN_TEST was not.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter

from agentflow.models.agent import PiiPolicy
from agentflow.security import PresidioDetector, Redaction, token_for

from .pii_corpus import BENIGN_DEV, BENIGN_TEST, CASES, EVASIONS

KEY = b"\x01" * 32


@dataclasses.dataclass
class Measurement:
    recall: dict[str, tuple[int, int, int]]
    """entity -> (planted, found, typed) on the plain spellings"""
    evasions: dict[str, tuple[int, int]]
    """entity -> (planted, found) on the evasive spellings"""
    false_positives: dict[str, Counter[str]]
    """"dev" / "test" -> entity -> benign sentences with a value redacted as that entity"""
    benign: dict[str, int]
    examples: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    """(half, entity, redacted text) of each false positive"""

    def fp_rate(self, half: str, entity: str | None = None) -> float:
        """Share of the half's benign sentences with a redaction (of ``entity``, or of any type)."""
        counts = self.false_positives[half]
        n = counts[entity] if entity is not None else counts["*"]
        return n / self.benign[half]


def _redaction(detector: PresidioDetector, policy: PiiPolicy) -> Redaction:
    return Redaction(detector, KEY, policy.entities, policy.min_score)


def measure() -> Measurement:
    policy = PiiPolicy()
    detector = PresidioDetector()
    planted: Counter[str] = Counter()
    found: Counter[str] = Counter()
    typed: Counter[str] = Counter()
    for entity, value, sentence in CASES:
        out = _redaction(detector, policy).redact_text(sentence)
        planted[entity] += 1
        if value not in out:
            found[entity] += 1
            if token_for(KEY, entity, value) in out:
                typed[entity] += 1
    evasive: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    for entity, value, sentence in EVASIONS:
        redaction = _redaction(detector, policy)
        out = redaction.redact_text(sentence)
        evasive[entity] += 1
        caught[entity] += value not in out and redaction.counts[entity] > 0
    fps: dict[str, Counter[str]] = {}
    examples: list[tuple[str, str, str]] = []
    for half, sentences in (("dev", BENIGN_DEV), ("test", BENIGN_TEST)):
        fps[half] = Counter()
        for sentence in sentences:
            redaction = _redaction(detector, policy)
            out = redaction.redact_text(sentence)
            for entity in redaction.counts:
                fps[half][entity] += 1
                examples.append((half, entity, out))
            fps[half]["*"] += bool(redaction.counts)
    return Measurement(
        {e: (planted[e], found[e], typed[e]) for e in planted},
        {e: (evasive[e], caught[e]) for e in evasive},
        fps, {"dev": len(BENIGN_DEV), "test": len(BENIGN_TEST)}, examples,
    )


def report(m: Measurement) -> str:
    lines = [f"{'entity':<15}{'planted':>8}{'found':>7}{'recall':>8}{'typed':>7}  {'evasive':>8}{'found':>7}"
             f"{'recall':>8}  {'FP dev':>7}{'FP test':>8}"]
    entities = list(dict.fromkeys([*m.recall, *m.evasions]))
    totals = [0, 0, 0, 0]
    for entity in entities:
        n, found, typed = m.recall.get(entity, (0, 0, 0))
        en, efound = m.evasions.get(entity, (0, 0))
        totals = [totals[0] + n, totals[1] + found, totals[2] + en, totals[3] + efound]
        plain = f"{n:>8}{found:>7}{found / n:>8.2f}{typed:>7}" if n else f"{'':>8}{'':>7}{'':>8}{'':>7}"
        evas = f"{en:>8}{efound:>7}{efound / en:>8.2f}" if en else f"{'':>8}{'':>7}{'':>8}"
        lines.append(f"{entity:<15}{plain}  {evas}  {m.fp_rate('dev', entity):>7.2f}{m.fp_rate('test', entity):>8.2f}")
    lines.append(f"{'all':<15}{totals[0]:>8}{totals[1]:>7}{totals[1] / totals[0]:>8.2f}{'':>7}  {totals[2]:>8}"
                 f"{totals[3]:>7}{totals[3] / totals[2]:>8.2f}  {m.fp_rate('dev'):>7.2f}{m.fp_rate('test'):>8.2f}")
    lines.append(f"false positives: share of benign sentences with a value redacted ({m.benign['dev']} dev sentences, "
                 f"used to choose the filters; {m.benign['test']} test sentences, not)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", action="store_true", help="print each false positive")
    args = parser.parse_args()
    started = time.perf_counter()
    PresidioDetector.engine()
    print(f"analyzer load: {time.perf_counter() - started:.2f}s")
    m = measure()
    print(report(m))
    if args.examples:
        for half, entity, out in m.examples:
            print(f"  {half} {entity}: {out}")


if __name__ == "__main__":
    main()
