"""Attempt tokens: compact HMAC tokens scoped to one attempt (pure, no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import replace

import orjson
import pytest

from agentflow.security.tokens import (
    MIN_KEY_BYTES,
    AttemptClaims,
    TokenError,
    issue_token,
    new_key,
    verify_token,
)

KEY = b"k" * 32
NOW = 1_800_000_000.0
CLAIMS = AttemptClaims("7d0c-uid", "team-a", "triage", "classify[2]", 3, NOW + 300)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: bytes, key: bytes = KEY) -> str:
    """A token with a correct signature over an arbitrary payload."""
    part = b64(payload)
    return f"{part}.{b64(hmac.new(key, part.encode(), hashlib.sha256).digest())}"


def test_roundtrip() -> None:
    token = issue_token(KEY, CLAIMS)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert verify_token(KEY, token, NOW) == CLAIMS


def test_the_claims_are_readable_json() -> None:
    payload = token_payload(issue_token(KEY, CLAIMS))
    assert payload == {
        "run_uid": "7d0c-uid",
        "namespace": "team-a",
        "workflow": "triage",
        "node": "classify[2]",
        "attempt": 3,
        "expires": NOW + 300,
    }


def token_payload(token: str) -> object:
    part = token.split(".")[0]
    return orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_unicode_and_integral_expiry_roundtrip() -> None:
    claims = replace(CLAIMS, node="état#2", workflow="résumé", expires=1_900_000_000)
    assert verify_token(KEY, issue_token(KEY, claims), NOW) == claims


def test_issuing_is_deterministic_and_claims_scoped() -> None:
    assert issue_token(KEY, CLAIMS) == issue_token(KEY, CLAIMS)
    assert issue_token(KEY, CLAIMS) != issue_token(KEY, replace(CLAIMS, attempt=4))


@pytest.mark.parametrize("now", [NOW + 300, NOW + 301, NOW + 10_000])
def test_expired(now: float) -> None:
    with pytest.raises(TokenError, match="expired") as info:
        verify_token(KEY, issue_token(KEY, CLAIMS), now)
    assert info.value.reason == "expired"
    assert "classify[2]" in str(info.value)


def test_just_before_expiry_is_valid() -> None:
    assert verify_token(KEY, issue_token(KEY, CLAIMS), NOW + 299.999) == CLAIMS


def test_another_key_is_a_bad_signature() -> None:
    with pytest.raises(TokenError) as info:
        verify_token(new_key(), issue_token(KEY, CLAIMS), NOW)
    assert info.value.reason == "bad_signature"


def test_edited_claims_are_a_bad_signature() -> None:
    token = issue_token(KEY, CLAIMS)
    _, signature = token.split(".")
    forged = b64(orjson.dumps({**orjson.loads(orjson.dumps(token_payload(token))), "attempt": 4}))
    with pytest.raises(TokenError) as info:
        verify_token(KEY, f"{forged}.{signature}", NOW)
    assert info.value.reason == "bad_signature"


def test_an_edited_signature_is_a_bad_signature() -> None:
    payload, signature = issue_token(KEY, CLAIMS).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(TokenError) as info:
        verify_token(KEY, f"{payload}.{flipped}", NOW)
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nodot",
        ".sig",
        "payload.",
        "a.b.c",
        "pay load.c2ln",
        "cGF5.not base64!",
        "cGF5.c2ln=",
        "cGF5.A",  # an impossible base64 length
        "é.c2ln",
        "x" * 5000 + ".c2ln",
    ],
)
def test_malformed(token: str) -> None:
    with pytest.raises(TokenError) as info:
        verify_token(KEY, token, NOW)
    assert info.value.reason == "malformed", str(info.value)
    assert "malformed token" in str(info.value)


def test_a_non_string_token_is_malformed() -> None:
    with pytest.raises(TokenError) as info:
        verify_token(KEY, None, NOW)  # type: ignore[arg-type]
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"not json", "not base64url JSON"),
        (b"[1]", "expected a JSON object"),
        (orjson.dumps({"run_uid": "u"}), "missing field(s) attempt, expires, namespace, node, workflow"),
        (orjson.dumps({"run_uid": "u", "namespace": "n", "workflow": "w", "node": "a", "attempt": 1,
                       "expires": NOW + 9, "admin": True}), "unexpected field(s) admin"),
        (orjson.dumps({"run_uid": "u", "namespace": "n", "workflow": "w", "node": "a", "attempt": True,
                       "expires": NOW + 9}), "'attempt' must be a non-negative integer"),
        (orjson.dumps({"run_uid": "u", "namespace": "n", "workflow": "w", "node": "", "attempt": 1,
                       "expires": NOW + 9}), "'node' must be a non-empty string"),
        (orjson.dumps({"run_uid": "u", "namespace": "n", "workflow": "w", "node": "a", "attempt": 1,
                       "expires": "later"}), "'expires' must be a finite number"),
    ],
)  # fmt: skip
def test_signed_but_malformed_claims(payload: bytes, problem: str) -> None:
    with pytest.raises(TokenError) as info:
        verify_token(KEY, signed(payload), NOW)
    assert info.value.reason == "malformed"
    assert problem in str(info.value)


@pytest.mark.parametrize("key", [b"", b"short", b"k" * (MIN_KEY_BYTES - 1)])
def test_short_keys_are_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_KEY_BYTES} random bytes"):
        issue_token(key, CLAIMS)
    with pytest.raises(ValueError, match="new_key"):
        verify_token(key, "a.b", NOW)


def test_bad_claims_are_not_issued() -> None:
    with pytest.raises(ValueError, match="'attempt' must be a non-negative integer"):
        issue_token(KEY, replace(CLAIMS, attempt=-1))
    with pytest.raises(ValueError, match="'expires' must be a finite number"):
        issue_token(KEY, replace(CLAIMS, expires=float("inf")))
    with pytest.raises(ValueError, match="'run_uid' must be a non-empty string"):
        issue_token(KEY, replace(CLAIMS, run_uid=""))


def test_new_keys_are_long_enough_and_random() -> None:
    a, b = new_key(), new_key()
    assert len(a) == MIN_KEY_BYTES and a != b
    assert verify_token(a, issue_token(a, CLAIMS), NOW) == CLAIMS
