"""Retry delays: exponential with a cap and deterministic jitter.

Jitter spreads retries of many runs apart, but the engine may not draw random
numbers: the "random" fraction is derived from the run's seed, the node and
the attempt, so a replay computes the very same delays.
"""

from __future__ import annotations

import hashlib

from ..models.workflow import Backoff


def jitter_fraction(seed: int, node: str, attempt: int) -> float:
    """A number in [-1, 1) fixed by (seed, node, attempt)."""
    digest = hashlib.sha256(f"{seed}:{node}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def retry_delay(backoff: Backoff, failed_attempt: int, seed: int, node: str) -> float:
    """Seconds to wait after attempt ``failed_attempt`` (1-based) failed; never above the cap."""
    base = backoff.initial_seconds * backoff.factor ** (failed_attempt - 1)
    base = min(base, backoff.max_seconds)
    delay = base * (1.0 + backoff.jitter * jitter_fraction(seed, node, failed_attempt))
    return min(max(0.0, delay), backoff.max_seconds)
