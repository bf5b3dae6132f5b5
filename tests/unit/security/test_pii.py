"""PII detection and tokens: stable per run, reversible only with the map; the analyzer loads offline."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap

import pytest

from agentflow.security import Detection, PiiTextTooLarge, PresidioDetector, Redaction, TokenMap, pii, token_for
from agentflow.security.pii import MAX_SCREENED_CHARS, TOKEN_RE, resolve_overlaps, unobfuscate, windows

KEY = b"\x03" * 32
ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE"]


def redaction(known: TokenMap | None = None) -> Redaction:
    return Redaction(PresidioDetector(), KEY, ENTITIES, 0.35, known)


def test_same_value_same_token_and_round_trip() -> None:
    r = redaction()
    text = "Ann Lee (ann.lee@example.com) wrote; reply to ann.lee@example.com. Card 4111 1111 1111 1111."
    out = r.redact_text(text)
    email = token_for(KEY, "EMAIL_ADDRESS", "ann.lee@example.com")
    assert out.count(email) == 2 and "ann.lee" not in out and "4111" not in out
    assert TOKEN_RE.fullmatch(email)
    assert r.counts["EMAIL_ADDRESS"] == 2 and r.counts["CREDIT_CARD"] == 1
    assert r.restore_text(out) == text


def test_tokens_differ_between_runs_and_entity_types() -> None:
    assert token_for(KEY, "PERSON", "Ann") != token_for(b"\x04" * 32, "PERSON", "Ann")
    assert token_for(KEY, "PERSON", "Ann") != token_for(KEY, "LOCATION", "Ann")


def test_restore_only_knows_its_own_or_the_runs_map() -> None:
    stranger = token_for(KEY, "PERSON", "Zoe Quinn")
    assert redaction().restore({"a": [stranger]}) == {"a": [stranger]}
    assert redaction(TokenMap({stranger: "Zoe Quinn"})).restore({"a": [stranger]}) == {"a": ["Zoe Quinn"]}


def test_tokens_are_not_redacted_again() -> None:
    token = token_for(KEY, "EMAIL_ADDRESS", "x@example.com")
    r = redaction()
    assert r.redact_text(f"write to {token}") == f"write to {token}" and not r.counts


def test_redact_walks_json_values_not_keys() -> None:
    out = redaction().redact({"bob@example.com": ["mail bob@example.com", 3, None]})
    assert list(out) == ["bob@example.com"] and "bob@" not in out["bob@example.com"][0]


def test_overlaps_keep_the_best_detection() -> None:
    found = [Detection("URL", 0, 5, 0.5), Detection("EMAIL_ADDRESS", 0, 12, 1.0), Detection("PERSON", 20, 25, 0.8)]
    assert [d.entity for d in resolve_overlaps(found)] == ["EMAIL_ADDRESS", "PERSON"]


def test_the_analyzer_loads_and_detects_with_the_network_blocked() -> None:
    """A fresh process: every socket connect and DNS look-up fails; spaCy's downloader must not be reached."""
    code = textwrap.dedent("""
        import socket, spacy.cli
        def refuse(*a, **k):
            raise AssertionError("network access while loading the PII analyzer")
        socket.socket.connect = refuse
        socket.getaddrinfo = refuse
        socket.create_connection = refuse
        spacy.cli.download = refuse
        from agentflow.security import PresidioDetector
        found = PresidioDetector().detect("Mail Ann Lee at ann.lee@example.com", ["PERSON", "EMAIL_ADDRESS"], 0.35)
        print(sorted(d.entity for d in found))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['EMAIL_ADDRESS', 'PERSON']"
    assert "Public Suffix" not in done.stderr and "Downloading" not in done.stderr


def test_hidden_spellings_are_redacted_and_restored_exactly() -> None:
    """The token replaces the span of the original text, hiding characters included; restore gives it back."""
    r = redaction()
    cases = [
        ("Write to ", "maria.gonzalez(at)example(dot)com", " today."),
        ("CC ", "kenji.w\u200b@example.jp", " on the refund."),
        ("Card: ", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "!"),
        ("Card ", "４１１１ １１１１ １１１１ １１１１", " was charged twice."),
        ("Mail ", "priya at example dot in", " before noon."),
    ]
    for before, value, after in cases:
        text = before + value + after
        out = r.redact_text(text)
        assert re.fullmatch(re.escape(before) + TOKEN_RE.pattern + re.escape(after), out), out
        assert r.restore_text(out) == text
    assert r.counts["EMAIL_ADDRESS"] == 3 and r.counts["CREDIT_CARD"] == 2


def test_plain_at_and_identifiers_are_not_pii() -> None:
    r = redaction()
    for text in ["Look at example.com for details.", "Our order number format is ORD-2024-000123.",
                 "The card on file (expiry 09/27) was declined by the bank."]:
        assert r.redact_text(text) == text, r.counts


def test_unobfuscate_maps_spans_back_to_the_original() -> None:
    text = "a ｂ\u200bc(at)d(dot)org z"
    view = unobfuscate(text)
    assert view.text == "a bc@d.org z"
    start = view.text.index("bc@")
    assert text[slice(*view.span(start, start + len("bc@d.org")))] == "ｂ\u200bc(at)d(dot)org"


def test_windows_cover_the_text_overlap_and_cut_on_whitespace() -> None:
    text = ("word " * 50_000)[:-1]  # 249,999 characters
    pieces = windows(text, size=10_000, overlap=500)
    assert pieces[0][0] == 0 and all(len(w) <= 10_000 for _, w in pieces)
    assert all(text[o:o + len(w)] == w for o, w in pieces)
    assert pieces[-1][0] + len(pieces[-1][1]) == len(text)  # covered to the end
    for (a, wa), (b, _) in itertools.pairwise(pieces):
        assert a < b and a + len(wa) - b >= 500  # consecutive windows share at least the overlap
        assert text[a + len(wa)] == " "  # cut on whitespace
    assert windows("x" * 25, size=10, overlap=3)[-1] == (21, "xxxx")  # no whitespace: cut anyway, still covered
    assert windows("short") == [(0, "short")]


def test_a_long_text_is_screened_in_windows_and_a_huge_one_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 2,000 characters here stand for the 200,000 of the product (a 1.2M-character text took 50 s to
    screen: too slow for a unit test): the same code, with entities in later windows and across cuts."""
    monkeypatch.setattr(pii, "WINDOW_CHARS", 2_000)
    monkeypatch.setattr(pii, "WINDOW_OVERLAP", 200)
    filler = "The weather report says nothing of interest today. " * 100  # 5,100 characters: three windows
    text = filler + "Mail ann.lee@example.com about it. " + filler + "Or bob.ray@example.org instead."
    found = PresidioDetector().detect(text, ["EMAIL_ADDRESS"], 0.35)
    assert [text[d.start:d.end] for d in found] == ["ann.lee@example.com", "bob.ray@example.org"]
    with pytest.raises(PiiTextTooLarge, match="is more than PII detection screens"):
        PresidioDetector().detect("a" * (MAX_SCREENED_CHARS + 1), ["EMAIL_ADDRESS"], 0.35)
