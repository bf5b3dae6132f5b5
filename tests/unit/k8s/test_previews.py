"""What status and Events may show: personal-data patterns masked, everything else kept, bounded."""

from __future__ import annotations

import pytest

from agentflow.k8s.previews import bounded, scrub


@pytest.mark.parametrize(("text", "tag"), [
    ("mail jane.doe+x@mail.example.co.uk now", "<EMAIL>"),
    ("call +1 (415) 555-0134 today", "<PHONE>"),
    ("call 020 7946 0958", "<PHONE>"),
    ("card 4111-1111-1111-1111", "<CARD>"),
    ("card 5500 0000 0000 0004", "<CARD>"),
    ("iban GB82 WEST 1234 5698 7654 32", "<IBAN>"),
    ("ssn 123-45-6789", "<SSN>"),
    ("host 10.1.2.3 down", "<IP>"),
    ("v6 2001:db8::1 down", "<IP>"),
    ("account 1234567890123456789012", "<NUMBER>"),
])
def test_personal_data_is_masked(text: str, tag: str) -> None:
    masked = scrub(text)
    assert tag in masked
    digits = [c for c in masked if c.isdigit()]
    assert len(digits) <= 2, masked  # at most a stray digit of the surrounding words survives


@pytest.mark.parametrize("text", [
    "step classify attempt 2 failed: TimeoutError: after 30s",
    "retry 1 of 3 in 2s",
    "version 1.2.3 of the prompt",
    "12:30 on 2026-12-06",
    "HTTP 429 from the model",
    "Input should be less than or equal to 7776000",
    "retry after 86400 seconds",
    "std::vector is not an address",
    "deadline 31.12.2026",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert scrub(text) == text


def test_a_card_number_failing_luhn_is_a_plain_number() -> None:
    assert scrub("order 4111 1111 1111 1112") != "order <CARD>"


def test_bounded_collapses_whitespace_and_cuts_with_an_ellipsis() -> None:
    assert bounded("a\n\n b", 10) == "a b"
    cut = bounded("word " * 100, 20)
    assert len(cut) == 20 and cut.endswith("…")
