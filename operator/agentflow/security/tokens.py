"""Short-lived tokens that let one step pod fetch its attempt and post its result, and nothing else.

A token is ``base64url(claims JSON) + "." + base64url(HMAC-SHA256(key, first part))`` (no padding),
the claims being the canonical JSON of :class:`AttemptClaims`. The operator issues one per attempt
with a key only it holds; the callback server verifies it and serves exactly the (run, node, attempt)
it names. Pure: the caller passes the key and the current time.

Errors::

    TokenError   the token is malformed, its signature does not match, or it expired (``.reason``)
    ValueError   the key is shorter than MIN_KEY_BYTES (a configuration error, not a bad token)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import math
import re
import secrets
from typing import Any, Literal

import orjson

__all__ = ["MIN_KEY_BYTES", "AttemptClaims", "TokenError", "check_key", "issue_token", "new_key", "verify_token"]

MIN_KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096  # far above a real token; bounds the work done on garbage
_B64URL = re.compile(r"[A-Za-z0-9_-]+")

TokenProblem = Literal["malformed", "bad_signature", "expired"]


class TokenError(Exception):
    """A token that must not be accepted; ``reason`` says which check failed."""

    def __init__(self, reason: TokenProblem, message: str) -> None:
        super().__init__(message)
        self.reason: TokenProblem = reason


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptClaims:
    """What a token grants: access to one attempt of one node of one run, until ``expires`` (unix seconds)."""

    run_uid: str
    namespace: str
    workflow: str
    node: str
    attempt: int
    expires: float

    def describe(self) -> str:
        """``attempt 2 of node 'classify' of run 'uid' (workflow ns/name)``, for messages and logs."""
        return (
            f"attempt {self.attempt} of node {self.node!r} of run {self.run_uid!r} "
            f"(workflow {self.namespace}/{self.workflow})"
        )


_STR_FIELDS = ("run_uid", "namespace", "workflow", "node")
_FIELDS = frozenset((*_STR_FIELDS, "attempt", "expires"))


def new_key() -> bytes:
    """A fresh random signing key of MIN_KEY_BYTES bytes."""
    return secrets.token_bytes(MIN_KEY_BYTES)


def check_key(key: bytes) -> None:
    """ValueError unless ``key`` is usable for signing (at least MIN_KEY_BYTES bytes)."""
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ValueError(
            f"the token key must be at least {MIN_KEY_BYTES} random bytes (got {size}); "
            "generate one with agentflow.security.tokens.new_key() or `openssl rand 32`"
        )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64url without padding; binascii.Error on anything else."""
    if len(text) % 4 == 1:
        raise binascii.Error("impossible length")
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def issue_token(key: bytes, claims: AttemptClaims) -> str:
    """A signed token for ``claims``. Raises ValueError for a short key or claims of the wrong types."""
    check_key(key)
    problem = _claims_problem(dataclasses.asdict(claims))
    if problem is not None:
        raise ValueError(f"cannot issue a token: {problem}")
    payload = _b64encode(orjson.dumps(dataclasses.asdict(claims), option=orjson.OPT_SORT_KEYS))
    return f"{payload}.{_b64encode(_sign(key, payload))}"


def verify_token(key: bytes, token: str, now: float) -> AttemptClaims:
    """The claims of a token signed with ``key`` that has not expired at ``now``; TokenError otherwise."""
    check_key(key)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed", "malformed token: expected a non-empty string of at most 4096 characters")
    payload, dot, signature = token.partition(".")
    if not dot or not _B64URL.fullmatch(payload) or not _B64URL.fullmatch(signature):
        raise TokenError("malformed", "malformed token: expected two base64url parts separated by one '.'")
    try:
        given = _b64decode(signature)
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "malformed token: the signature is not base64url") from None
    if not hmac.compare_digest(given, _sign(key, payload)):
        raise TokenError(
            "bad_signature", "bad token signature: it was not issued by this operator (or the key changed)"
        )
    try:
        data = orjson.loads(_b64decode(payload))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "malformed token: the claims are not base64url JSON") from None
    problem = _claims_problem(data)
    if problem is not None:
        raise TokenError("malformed", f"malformed token claims: {problem}")
    claims = AttemptClaims(**data)
    if not now < claims.expires:
        raise TokenError(
            "expired",
            f"token expired {now - claims.expires:.0f}s ago (for {claims.describe()}); "
            "the step must finish within its token's lifetime",
        )
    return claims


def _claims_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "expected a JSON object"
    missing = ", ".join(sorted(_FIELDS - data.keys()))
    if missing:
        return f"missing field(s) {missing}"
    extra = ", ".join(sorted(str(k) for k in data.keys() - _FIELDS))
    if extra:
        return f"unexpected field(s) {extra}"
    for name in _STR_FIELDS:
        if not isinstance(data[name], str) or not data[name]:
            return f"field {name!r} must be a non-empty string"
    attempt = data["attempt"]
    if type(attempt) is not int or attempt < 0:
        return f"field 'attempt' must be a non-negative integer, got {attempt!r}"
    expires = data["expires"]
    if isinstance(expires, bool) or not isinstance(expires, int | float) or not math.isfinite(expires):
        return f"field 'expires' must be a finite number of unix seconds, got {expires!r}"
    return None
