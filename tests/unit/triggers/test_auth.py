"""Authenticating deliveries: GitHub-style HMAC, Slack v0 with its timestamp, Standard Webhooks (the id and the
timestamp signed), bearer tokens (pure)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from typing import Any

import pytest

from agentflow.models import TriggerAuth
from agentflow.triggers.auth import Unauthenticated, sign_hmac, sign_slack, sign_standard, verify

KEY = b"It's a Secret to Everybody"
BODY = b"Hello, World!"
NOW = 1_800_000_000.0


def auth(**spec: Any) -> TriggerAuth:
    return TriggerAuth.model_validate(spec)


HMAC = auth(hmac={"secretRef": {"name": "gh"}})


def test_githubs_documented_example_verifies() -> None:
    # docs.github.com "Validating webhook deliveries": this secret and payload give this signature
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_hmac(KEY, BODY) == expected
    verify(HMAC, KEY, BODY, {"X-Hub-Signature-256": expected}, NOW)
    verify(HMAC, KEY, BODY, {"x-hub-signature-256": expected}, NOW)  # header names in any case


def test_openssl_signs_the_same_as_the_server_checks() -> None:
    """The README's curl example computes the header with openssl; it must agree with the server."""
    out = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", KEY.decode(), "-hex"], input=BODY,
                         capture_output=True, check=True).stdout.decode()
    verify(HMAC, KEY, BODY, {"X-Hub-Signature-256": "sha256=" + out.strip().split()[-1]}, NOW)


@pytest.mark.parametrize("headers, why", [
    ({}, "no X-Hub-Signature-256 header"),
    ({"X-Hub-Signature-256": ""}, "does not match"),
    ({"X-Hub-Signature-256": sign_hmac(b"another key", BODY)}, "does not match"),
    ({"X-Hub-Signature-256": sign_hmac(KEY, BODY + b" ")}, "does not match"),
    ({"X-Hub-Signature-256": sign_hmac(KEY, BODY)[7:]}, "does not match"),  # the digest without its prefix
    ({"X-Hub-Signature-256": sign_hmac(KEY, BODY, "sha1", "sha1=")}, "does not match"),
    ({"X-Hub-Signature-256": "sha256=\udcff"}, "does not match"),  # not even UTF-8
])
def test_a_wrong_or_missing_signature_is_refused(headers: dict[str, str], why: str) -> None:
    with pytest.raises(Unauthenticated, match=why):
        verify(HMAC, KEY, BODY, headers, NOW)


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("agentflow.triggers.auth.hmac.compare_digest", spy)
    with pytest.raises(Unauthenticated):
        verify(HMAC, KEY, BODY, {"X-Hub-Signature-256": "sha256=00"}, NOW)
    verify(auth(bearer={"secretRef": {"name": "t"}}), KEY, BODY, {"Authorization": "Bearer " + KEY.decode()}, NOW)
    assert len(compared) == 2
    assert compared[1] == (hashlib.sha256(KEY).digest(),) * 2  # tokens compared as digests: no length shows


def test_a_custom_header_algorithm_and_prefix() -> None:
    spec = auth(hmac={"secretRef": {"name": "s"}, "header": "X-Signature", "algorithm": "sha512", "prefix": ""})
    verify(spec, KEY, BODY, {"X-Signature": hmac.new(KEY, BODY, "sha512").hexdigest()}, NOW)
    with pytest.raises(Unauthenticated):
        verify(spec, KEY, BODY, {"X-Signature": "sha512=" + hmac.new(KEY, BODY, "sha512").hexdigest()}, NOW)


SLACK = auth(slack={"secretRef": {"name": "slack"}, "maxSkewSeconds": 300})


def slack_headers(at: float, key: bytes = KEY, body: bytes = BODY) -> dict[str, str]:
    return {"X-Slack-Signature": sign_slack(key, body, int(at)), "X-Slack-Request-Timestamp": str(int(at))}


def test_a_slack_signature_computed_by_openssl_verifies() -> None:
    """Slack's recipe, computed independently: HMAC-SHA256 of "v0:TIMESTAMP:BODY" with the signing secret."""
    stamp = str(int(NOW))
    out = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", KEY.decode(), "-hex"],
                         input=b"v0:" + stamp.encode() + b":" + BODY, capture_output=True, check=True).stdout.decode()
    headers = {"X-Slack-Signature": "v0=" + out.strip().split()[-1], "X-Slack-Request-Timestamp": stamp}
    verify(SLACK, KEY, BODY, headers, NOW + 10)


def test_a_slack_request_outside_the_skew_is_refused_as_a_replay() -> None:
    verify(SLACK, KEY, BODY, slack_headers(NOW - 300), NOW)
    with pytest.raises(Unauthenticated, match="301 s from now"):
        verify(SLACK, KEY, BODY, slack_headers(NOW - 301), NOW)
    with pytest.raises(Unauthenticated, match="from now"):
        verify(SLACK, KEY, BODY, slack_headers(NOW + 3600), NOW)


@pytest.mark.parametrize("change", [
    {"X-Slack-Request-Timestamp": str(int(NOW) + 1)},  # the signature covers the timestamp
    {"X-Slack-Request-Timestamp": "1e9"},
    {"X-Slack-Request-Timestamp": "-5"},
    {"X-Slack-Signature": "v0=" + "0" * 64},
])
def test_a_slack_request_with_a_changed_part_is_refused(change: dict[str, str]) -> None:
    with pytest.raises(Unauthenticated):
        verify(SLACK, KEY, BODY, {**slack_headers(NOW), **change}, NOW)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ", "Basic " + KEY.decode(), "Bearer wrong",
                                    "Bearer " + KEY.decode() + "x"])
def test_a_bearer_token_must_match(header: str | None) -> None:
    spec = auth(bearer={"secretRef": {"name": "t"}})
    verify(spec, KEY, BODY, {"Authorization": "bearer  " + KEY.decode()}, NOW)
    with pytest.raises(Unauthenticated):
        verify(spec, KEY, BODY, {} if header is None else {"Authorization": header}, NOW)


def test_an_empty_key_authenticates_nothing() -> None:
    with pytest.raises(Unauthenticated, match="empty"):
        verify(HMAC, b"", BODY, {"X-Hub-Signature-256": sign_hmac(b"", BODY)}, NOW)


def test_exactly_one_scheme() -> None:
    with pytest.raises(ValueError, match="exactly one of hmac, slack, standard, bearer \\(got none\\)"):
        auth()
    with pytest.raises(ValueError, match="got hmac, bearer"):
        auth(hmac={"secretRef": {"name": "a"}}, bearer={"secretRef": {"name": "b"}})


STANDARD = auth(standard={"secretRef": {"name": "svix"}})
WHSEC = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def standard_headers(stamp: float, msg_id: str = "msg_1", body: bytes = BODY) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(stamp)),
            "webhook-signature": sign_standard(WHSEC, msg_id, int(stamp), body)}


def test_the_standard_webhooks_test_vector() -> None:
    """The specification's own example (its reference libraries' test): this secret, id, time and body sign to
    this value, and a request carrying it verifies, with or without the whsec_ prefix on the key."""
    signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    body, msg_id, stamp = b'{"test": 2432232314}', "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    assert sign_standard(WHSEC, msg_id, stamp, body) == signature
    headers = {"Webhook-Id": msg_id, "Webhook-Timestamp": str(stamp), "Webhook-Signature": signature}
    verify(STANDARD, WHSEC, body, headers, stamp + 60)
    verify(STANDARD, WHSEC.removeprefix(b"whsec_"), body, headers, stamp)
    # several signatures (a sender rotating its secret): any v1 one may match
    rotated = {**headers, "Webhook-Signature": "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,x " + signature}
    verify(STANDARD, WHSEC, body, rotated, stamp)


def test_a_standard_request_replayed_under_another_id_or_late_is_refused() -> None:
    verify(STANDARD, WHSEC, BODY, standard_headers(NOW - 300), NOW)
    captured = standard_headers(NOW)
    with pytest.raises(Unauthenticated, match="no webhook-signature matches"):  # the id is signed
        verify(STANDARD, WHSEC, BODY, {**captured, "webhook-id": "msg_2"}, NOW)
    with pytest.raises(Unauthenticated, match="301 s from now"):
        verify(STANDARD, WHSEC, BODY, standard_headers(NOW - 301), NOW)
    with pytest.raises(Unauthenticated, match="no webhook-signature matches"):
        verify(STANDARD, WHSEC, BODY + b" ", captured, NOW)


@pytest.mark.parametrize("change", [
    {"webhook-id": ""}, {"webhook-timestamp": "soon"}, {"webhook-signature": "v2,abc"},
    {"webhook-signature": "v1,not base64!"}, {"webhook-signature": ""}, {"webhook-id": "msg_\udcff"},
])
def test_a_standard_request_with_a_bad_part_is_refused(change: dict[str, str]) -> None:
    with pytest.raises(Unauthenticated):
        verify(STANDARD, WHSEC, BODY, {**standard_headers(NOW), **change}, NOW)


def test_a_key_that_is_not_a_standard_webhooks_secret_authenticates_nothing() -> None:
    with pytest.raises(Unauthenticated, match="not a Standard Webhooks secret"):
        verify(STANDARD, b"whsec_not base64 at all!", BODY, standard_headers(NOW), NOW)
    with pytest.raises(Unauthenticated, match="empty"):
        verify(STANDARD, b"whsec_", BODY, standard_headers(NOW), NOW)
