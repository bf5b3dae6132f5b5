"""Who is calling: a bearer token in, the one attempt it may act for out.

The callback server and the gateway take an :data:`Authenticate` (``await authenticate(token) ->
AttemptClaims``, raising :class:`AuthError`) and never look inside tokens themselves. Two implementations:

    agentflow.services.identity.PodIdentity   on a cluster: the step pod's service-account token, projected
                                              into the pod for the audience ``agentflow`` (never in the Pod
                                              object), checked by a TokenReview; it names the pod, and the pod
                                              names its attempt. Void once the pod is gone or the attempt ended.
    SignedTokens                              off a cluster (`agentflow gateway --token-key-file`, benchmarks):
                                              HMAC tokens scoped to one attempt (agentflow.security.tokens)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from .tokens import AttemptClaims, TokenError, check_key, verify_token

__all__ = ["AttemptEnded", "AuthError", "Authenticate", "SignedTokens"]


class AuthError(Exception):
    """The token is missing, malformed, expired, revoked or names no attempt (HTTP 401). ``retry_after``: the
    caller may try again then (the operator has not recorded the pod yet), otherwise it is final."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AttemptEnded(AuthError):
    """The token's attempt has ended (its result is stored): only re-posting that result is still answered."""

    def __init__(self, message: str, claims: AttemptClaims) -> None:
        super().__init__(message)
        self.claims = claims


Authenticate = Callable[[str], Awaitable[AttemptClaims]]


class SignedTokens:
    """Accepts HMAC attempt tokens signed with ``key`` (agentflow.security.tokens) until they expire."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        check_key(key)
        self._key = key
        self._clock = clock

    async def __call__(self, token: str) -> AttemptClaims:
        try:
            return verify_token(self._key, token, self._clock())
        except TokenError as exc:
            raise AuthError(str(exc)) from None
