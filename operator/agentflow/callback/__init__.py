"""The endpoint step pods fetch their attempt from and post their results to, and its tokens.

``tokens`` is pure (HMAC tokens scoped to one attempt); ``server`` is the aiohttp server. Import
the server from :mod:`agentflow.callback.server` so that using tokens does not load aiohttp.
"""

from __future__ import annotations

from .tokens import MIN_KEY_BYTES, AttemptClaims, TokenError, check_key, issue_token, new_key, verify_token

__all__ = ["MIN_KEY_BYTES", "AttemptClaims", "TokenError", "check_key", "issue_token", "new_key", "verify_token"]
