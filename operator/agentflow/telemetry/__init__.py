"""Traces: OpenTelemetry spans of runs, attempts, model and tool calls (GenAI semantic conventions v1.44.0).

Telemetry observes and never decides: nothing here changes what the engine or the gateway does, and with no
endpoint configured it is off (:meth:`Tracing.off`: no-op spans, nothing exported).

    ids.py       PURE: the trace of a run and the span of an attempt, derived from the run id (deterministic: a
                 resumed run, another operator replica, a step pod and the gateway agree without talking)
    genai.py     the attribute names (the pinned semantic conventions) and AgentFlow's own
    spans.py     PURE: RunTrace, a run's spans from its journal events (run, attempts, loops, approvals)
    context.py   W3C trace context across processes: TRACEPARENT, the traceparent header
    tracing.py   Tracing: settings (flags, OTEL_*), the OTLP/HTTP exporter behind a bounded batch processor,
                 live spans (the gateway's chat, budget and memory spans), content recording after redaction
"""

from .context import TRACEPARENT_ENV, attached, current_traceparent, extract, from_env, inject
from .ids import SpanIds, attempt_ids, parse_traceparent, run_ids, trace_id, traceparent
from .spans import RunTrace, SpanRecord, StepInfo, steps_of
from .tracing import TraceSettings, Tracing, fail

__all__ = [
    "TRACEPARENT_ENV", "RunTrace", "SpanIds", "SpanRecord", "StepInfo", "TraceSettings", "Tracing", "attached",
    "attempt_ids", "current_traceparent", "extract", "fail", "from_env", "inject", "parse_traceparent", "run_ids",
    "steps_of", "trace_id", "traceparent",
]
