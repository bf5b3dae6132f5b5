"""Trace context across boundaries: W3C ``traceparent`` in HTTP headers, ``TRACEPARENT`` in a process's environment.

::

    operator   -> step pod       TRACEPARENT (agentflow.k8s.podspec: the attempt's ids, derived, deterministic)
    local run  -> step process   TRACEPARENT (agentflow.executors.subprocess: the current context)
    local run  -> its attempt    attached(attempt_ids(...)) around the in-process executor
    any caller -> gateway        traceparent header (agentflow.llm.gateway_client: inject)
    gateway    <- its callers    extract (agentflow.gateway.server: the middleware attaches it)
    tool       -> HTTP tool      traceparent header (agentflow.tools.runner: inject)

The propagator is OpenTelemetry's W3C TraceContext propagator, used directly (no global propagator is set).
Nothing here records a span: a process that does not export still passes the context on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .ids import SpanIds, parse_traceparent, traceparent

__all__ = ["TRACEPARENT_ENV", "attached", "context_of", "current_ids", "current_traceparent", "extract", "from_env",
           "inject"]

TRACEPARENT_ENV = "TRACEPARENT"
"""A process's parent span (the W3C traceparent), set on step pods and local step processes."""

_W3C = TraceContextTextMapPropagator()
H = TypeVar("H", bound=MutableMapping[str, str])


def context_of(ids: SpanIds, base: Context | None = None) -> Context:
    """A context whose current span is the (remote, sampled) span ``ids``."""
    span = NonRecordingSpan(SpanContext(ids.trace_id, ids.span_id, is_remote=True,
                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    return trace.set_span_in_context(span, base)


@contextlib.contextmanager
def attached(ids: SpanIds | Context | None) -> Iterator[None]:
    """Make ``ids`` (or a context) current for the block; nothing for None."""
    if ids is None:
        yield
        return
    token = otel_context.attach(ids if isinstance(ids, Context) else context_of(ids))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_ids() -> SpanIds | None:
    """The current span's ids, or None when there is none."""
    ctx = trace.get_current_span().get_span_context()
    return SpanIds(ctx.trace_id, ctx.span_id) if ctx.is_valid else None


def current_traceparent() -> str | None:
    ids = current_ids()
    return traceparent(ids.trace_id, ids.span_id) if ids is not None else None


def inject(headers: H) -> H:
    """``headers`` with the current context's ``traceparent`` (unchanged when there is no current span)."""
    if current_ids() is not None:
        _W3C.inject(headers)
    return headers


def extract(headers: Mapping[str, str]) -> Context | None:
    """The context a request's ``traceparent`` names, or None."""
    value = headers.get("traceparent") or headers.get("Traceparent")
    if parse_traceparent(value) is None:
        return None
    return _W3C.extract({"traceparent": str(value)})


def from_env(env: Mapping[str, str]) -> SpanIds | None:
    """The parent a process was started under (TRACEPARENT), or None."""
    return parse_traceparent(env.get(TRACEPARENT_ENV))
