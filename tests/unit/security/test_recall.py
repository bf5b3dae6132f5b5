"""Recall of the PII detector per entity type (120 planted values, 20 evasive spellings) and its false
positives on benign sentences; see recall.py."""

from __future__ import annotations

import pytest

from .pii_corpus import BENIGN_TEST, CASES, EVASIONS
from .recall import Measurement, measure

FLOORS = {"PERSON": 0.8, "EMAIL_ADDRESS": 1.0, "PHONE_NUMBER": 0.9, "CREDIT_CARD": 0.9, "IBAN_CODE": 0.9,
          "US_SSN": 0.9, "IP_ADDRESS": 1.0}


@pytest.fixture(scope="module")
def measured() -> Measurement:
    return measure()


def test_recall_per_entity_type_meets_its_floor(measured: Measurement) -> None:
    assert len(CASES) >= 100
    report = {e: round(found / n, 2) for e, (n, found, _) in measured.recall.items()}
    for entity, floor in FLOORS.items():
        assert report[entity] >= floor, (entity, report)
    for entity, (_, found, typed) in measured.recall.items():
        assert typed >= found - 1, f"{entity}: most found values must get a token of their own type"
    assert sum(f for _, f, _ in measured.recall.values()) / len(CASES) >= 0.93


def test_evasive_spellings_are_redacted(measured: Measurement) -> None:
    """(at)/(dot), " at "/" dot ", zero-width characters, full-width and spaced-out digits."""
    assert len(EVASIONS) >= 20
    caught = sum(found for _, found in measured.evasions.values())
    assert caught / len(EVASIONS) >= 0.9, measured.evasions
    assert all(found >= 1 for _, found in measured.evasions.values()), measured.evasions


def test_benign_sentences_are_left_alone(measured: Measurement) -> None:
    """Instructions, dates, versions and order numbers are no PII; the held-out half was not used to tune."""
    assert len(BENIGN_TEST) >= 30
    assert measured.fp_rate("dev") <= 0.05, measured.examples
    assert measured.fp_rate("test") <= 0.1, measured.examples
