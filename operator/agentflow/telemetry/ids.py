"""Trace and span ids derived from what a run already names: its id, a node and an attempt. Pure.

One run is one trace, whoever records its spans: the local runner, an operator replica after a restart, a
step pod or the gateway all compute the same ids from the same run, so a resumed run continues its trace
and a span recorded late still finds its parent::

    trace id       first 16 bytes of SHA-256("agentflow/trace" NUL run id)
    span id        first 8 bytes of SHA-256("agentflow/span" NUL run id NUL part NUL ...)
    the run        span_id(run, "run")
    an attempt     span_id(run, "attempt", node, attempt)     (what TRACEPARENT of its step pod names)
    a loop         span_id(run, "loop", node, attempt)
    an approval    span_id(run, "approval", node, n)           (n: the node's n-th request)

W3C trace context (``traceparent``): ``00-<32 hex trace id>-<16 hex span id>-01``.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

__all__ = ["SpanIds", "attempt_ids", "parse_traceparent", "run_ids", "span_id", "trace_id", "traceparent"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).digest()


def trace_id(run_id: str) -> int:
    """The trace of run ``run_id`` (never 0: W3C forbids an all-zero id)."""
    return int.from_bytes(_digest("agentflow/trace", run_id)[:16], "big") or 1


def span_id(run_id: str, *parts: str | int) -> int:
    """A span of run ``run_id`` named by ``parts`` (never 0)."""
    return int.from_bytes(_digest("agentflow/span", run_id, *map(str, parts))[:8], "big") or 1


class SpanIds(NamedTuple):
    trace_id: int
    span_id: int

    @property
    def traceparent(self) -> str:
        return traceparent(self.trace_id, self.span_id)

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}"


def run_ids(run_id: str) -> SpanIds:
    """The run's own span."""
    return SpanIds(trace_id(run_id), span_id(run_id, "run"))


def attempt_ids(run_id: str, node: str, attempt: int) -> SpanIds:
    """The span of one attempt: the parent of everything it does (model calls, tool HTTP calls)."""
    return SpanIds(trace_id(run_id), span_id(run_id, "attempt", node, attempt))


def traceparent(trace: int, span: int, sampled: bool = True) -> str:
    return f"00-{trace:032x}-{span:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: str | None) -> SpanIds | None:
    """The ids of a W3C ``traceparent`` (version 00), or None when it is not one."""
    m = _TRACEPARENT.match((value or "").strip().lower())
    if m is None:
        return None
    trace, span = int(m.group(1), 16), int(m.group(2), 16)
    if not trace or not span:
        return None
    return SpanIds(trace, span)
