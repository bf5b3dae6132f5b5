"""Recall of the PII detector per entity type on the labelled set (120 planted values); see recall.py."""

from __future__ import annotations

from .pii_corpus import CASES
from .recall import measure

FLOORS = {"PERSON": 0.8, "EMAIL_ADDRESS": 1.0, "PHONE_NUMBER": 0.9, "CREDIT_CARD": 0.9, "IBAN_CODE": 0.9,
          "US_SSN": 0.9, "IP_ADDRESS": 1.0}


def test_recall_per_entity_type_meets_its_floor() -> None:
    assert len(CASES) >= 100
    results, false_positives = measure()
    report = {e: round(found / n, 2) for e, (n, found, _) in results.items()}
    print("recall per entity type:", report, "false positives in benign sentences:", false_positives)
    for entity, floor in FLOORS.items():
        assert report[entity] >= floor, (entity, report)
    for entity, (_, found, typed) in results.items():
        assert typed >= found - 1, f"{entity}: most found values must get a token of their own type"
    assert sum(f for _, f, _ in results.values()) / len(CASES) >= 0.93
    assert false_positives <= 2
