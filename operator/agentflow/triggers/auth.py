"""Authenticating a trigger's delivery (pure: the key, the raw body, the headers and the time are given).

:func:`verify` checks a delivery against its trigger's ``spec.auth`` before the body is parsed, comparing in
constant time (:func:`hmac.compare_digest`; a bearer token is compared as SHA-256 digests so that not even its
length shows in the timing). It raises :class:`Unauthenticated` with the reason for the operator's log; the
caller is told only that the delivery is not authenticated, never which part failed::

    hmac     HEADER: PREFIX + hex(HMAC-ALG(key, body))              (GitHub: X-Hub-Signature-256: sha256=...)
    slack    X-Slack-Signature: v0= + hex(HMAC-SHA256(key, "v0:" + TS + ":" + body)), with
             X-Slack-Request-Timestamp: TS within maxSkewSeconds of now
    standard webhook-signature: "v1," + base64(HMAC-SHA256(key, ID + "." + TS + "." + body)) (one or more,
             space-separated, any may match), with webhook-id: ID and webhook-timestamp: TS within
             maxSkewSeconds of now; the key is the secret as Standard Webhooks senders give it, whsec_BASE64
    bearer   Authorization: Bearer KEY

Replays: with hmac and slack a signature covers the body (and, for slack, the timestamp), not the delivery-id
header; whoever captured a signed request could post it again under a new id. The slack scheme bounds that by
the timestamp; with hmac, take the delivery id from the signed body where the sender puts one there
(``spec.deliveryId``). The standard scheme signs the id itself (the default delivery id is its webhook-id), so a
captured request starts nothing new under another id, and its timestamp bounds its replay under the same one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from ..models import TriggerAuth

__all__ = ["Unauthenticated", "sign_hmac", "sign_slack", "sign_standard", "standard_key", "verify"]


class Unauthenticated(Exception):
    """The delivery is not authenticated; the message says why (for the log, never for the caller)."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def sign_hmac(key: bytes, body: bytes, algorithm: str = "sha256", prefix: str = "sha256=") -> str:
    """The header value a sender computes (GitHub style)."""
    return prefix + hmac.new(key, body, algorithm).hexdigest()


def sign_slack(key: bytes, body: bytes, timestamp: int) -> str:
    """The X-Slack-Signature value a sender computes for a request signed at ``timestamp``."""
    base = b"v0:" + str(timestamp).encode("ascii") + b":" + body
    return "v0=" + hmac.new(key, base, hashlib.sha256).hexdigest()


def standard_key(secret: bytes) -> bytes:
    """The HMAC key of a Standard Webhooks secret (whsec_BASE64, or the base64 alone); Unauthenticated when it is
    not base64 (the Secret holds something else)."""
    text = secret.strip()
    if text.startswith(b"whsec_"):
        text = text[len(b"whsec_"):]
    try:
        key = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthenticated("the trigger's key is not a Standard Webhooks secret (whsec_ and base64)") from None
    if not key:
        raise Unauthenticated("the trigger's key is empty")
    return key


def sign_standard(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value a Standard Webhooks sender computes (``secret`` as it gives it: whsec_...)."""
    signed = msg_id.encode("utf-8", "surrogateescape") + b"." + str(timestamp).encode("ascii") + b"." + body
    return "v1," + base64.b64encode(hmac.new(standard_key(secret), signed, hashlib.sha256).digest()).decode("ascii")


def _fresh(stamp: str | None, header: str, max_skew: int, now: float) -> int:
    """A signed Unix time within ``max_skew`` seconds of ``now``; Unauthenticated otherwise."""
    stamp = (stamp or "").strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise Unauthenticated(f"{header} is not a Unix time")
    skew = abs(now - int(stamp))
    if skew > max_skew:
        raise Unauthenticated(f"{header} is {skew:.0f} s from now (at most {max_skew}): too old to be fresh, or a "
                              "replay")
    return int(stamp)


def verify(auth: TriggerAuth, key: bytes, body: bytes, headers: Mapping[str, str], now: float) -> None:
    """Return when the delivery is authenticated under ``auth`` with ``key``; Unauthenticated otherwise."""
    if not key:
        raise Unauthenticated("the trigger's key is empty")
    if auth.hmac is not None:
        given = _header(headers, auth.hmac.header)
        if given is None:
            raise Unauthenticated(f"no {auth.hmac.header} header")
        expected = sign_hmac(key, body, auth.hmac.algorithm, auth.hmac.prefix)
        if not _same(given.strip(), expected):
            raise Unauthenticated(f"the {auth.hmac.header} signature does not match the body")
        return
    if auth.slack is not None:
        signature = _header(headers, auth.slack.signature_header)
        stamp = _header(headers, auth.slack.timestamp_header)
        if signature is None or stamp is None:
            raise Unauthenticated(f"no {auth.slack.signature_header} or {auth.slack.timestamp_header} header")
        signed_at = _fresh(stamp, auth.slack.timestamp_header, auth.slack.max_skew_seconds, now)
        if not _same(signature.strip(), sign_slack(key, body, signed_at)):
            raise Unauthenticated(f"the {auth.slack.signature_header} signature does not match the body")
        return
    if auth.standard is not None:
        msg_id, signatures = _header(headers, "webhook-id"), _header(headers, "webhook-signature")
        if not msg_id or signatures is None:
            raise Unauthenticated("no webhook-id or webhook-signature header")
        signed_at = _fresh(_header(headers, "webhook-timestamp"), "webhook-timestamp",
                           auth.standard.max_skew_seconds, now)
        expected = sign_standard(key, msg_id, signed_at, body)
        # every v1 signature is compared (a sender rotating its secret sends one per secret)
        if not any([_same(given, expected) for given in signatures.split() if given.startswith("v1,")]):
            raise Unauthenticated("no webhook-signature matches the id, timestamp and body")
        return
    if auth.bearer is not None:
        scheme, _, token = (_header(headers, "Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("no bearer token")
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(digest, hashlib.sha256(key).digest()):
            raise Unauthenticated("the bearer token does not match")
        return
    raise Unauthenticated("the trigger names no auth scheme")  # the model refuses that; never reached
