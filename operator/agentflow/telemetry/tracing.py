"""The process's tracer: built once at startup from settings, off (a no-op) without an endpoint.

::

    settings = TraceSettings.from_env(os.environ, endpoint=args.otlp_endpoint, ...)
    tracing = Tracing.build(settings, redact=...)     # Tracing.off() when no endpoint is configured
    tracing.emit(run_trace.observe(events))           # spans a driver derives from its journal (chosen ids)
    with tracing.span("chat gpt-4o", {...}) as span:  # live spans (the gateway), children of the current context
        ...
    tracing.trace_url(trace_hex)                      # the configured link, or None
    tracing.shutdown(2.0)                             # flush for at most that long

Export: OTLP over HTTP/protobuf to ``endpoint`` (``--otlp-endpoint``, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
else OTEL_EXPORTER_OTLP_ENDPOINT + ``/v1/traces``; headers from OTEL_EXPORTER_OTLP_HEADERS; service name from
OTEL_SERVICE_NAME), through a BatchSpanProcessor with a bounded queue (``max_queue_size``: spans past it are
dropped, never waited for) and a short export timeout, in its own thread: an unreachable collector costs a
run nothing but the dropped spans. OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off.

Content (prompts, completions, tool arguments) is recorded only when ``content`` is on (``--trace-content``,
AGENTFLOW_TRACE_CONTENT=true), and then only after ``redact`` (agentflow.security.pii: PII replaced by tokens)
and cut to ``MAX_CONTENT_CHARS``. The tracer provider is this object's own: no global OpenTelemetry state is set.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import genai
from .context import context_of
from .ids import SpanIds
from .spans import SpanRecord

__all__ = ["MAX_CONTENT_CHARS", "Redact", "TraceSettings", "Tracing", "fail"]

log = logging.getLogger(__name__)

Redact = Callable[[str], str]
MAX_CONTENT_CHARS = 16_000
TRUE = frozenset({"1", "true", "yes", "on"})


@dataclasses.dataclass(frozen=True)
class TraceSettings:
    """How a process exports its spans. ``endpoint`` None: tracing is off."""

    endpoint: str | None = None
    service_name: str = "agentflow"
    content: bool = False
    url_template: str | None = None
    export_timeout_seconds: float = 3.0
    max_queue_size: int = 2048
    schedule_delay_millis: int = 500

    def __post_init__(self) -> None:
        if self.url_template is not None and "{trace_id}" not in self.url_template:
            raise ValueError(f"trace URL template {self.url_template!r} has no {{trace_id}}; for example "
                             "https://jaeger.example.com/trace/{trace_id}")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: expected an http:// or https:// URL of the "
                             "collector's OTLP/HTTP receiver (port 4318), for example http://otel-collector:4318")

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, endpoint: str | None = None, content: bool | None = None,
                 url_template: str | None = None, service_name: str = "agentflow") -> TraceSettings:
        """Flags (the arguments) first, then the standard OTEL_* variables and AGENTFLOW_TRACE_*; ValueError
        naming the setting when one is unusable."""
        off = (env.get("OTEL_SDK_DISABLED", "").strip().lower() in TRUE
               or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none")
        url = traces_url(endpoint) if endpoint else None
        if url is None and not off:
            if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
                url = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
            elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
                url = traces_url(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        if content is None:
            content = env.get("AGENTFLOW_TRACE_CONTENT", "").strip().lower() in TRUE
        template = url_template or env.get("AGENTFLOW_TRACE_URL_TEMPLATE", "").strip() or None
        return cls(endpoint=None if off and not endpoint else url,
                   service_name=env.get("OTEL_SERVICE_NAME", "").strip() or service_name,
                   content=content, url_template=template)


def traces_url(base: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (``http://c:4318`` -> ``http://c:4318/v1/traces``)."""
    base = base.strip()
    return base if base.rstrip("/").endswith("/v1/traces") else base.rstrip("/") + "/v1/traces"


class _ChosenIds(IdGenerator):
    """Random ids, except for the span :meth:`Tracing.emit` is building: the ids it derived."""

    def __init__(self) -> None:
        self.chosen: contextvars.ContextVar[SpanIds | None] = contextvars.ContextVar("agentflow_span_ids",
                                                                                     default=None)
        self._random = random.Random()

    def generate_span_id(self) -> int:
        ids = self.chosen.get()
        return ids.span_id if ids is not None else self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        ids = self.chosen.get()
        return ids.trace_id if ids is not None else self._random.getrandbits(128) or 1


def fail(span: Span, error_type: str, message: str = "") -> None:
    """Mark ``span`` failed: ``error.type`` and an ERROR status."""
    span.set_attribute(genai.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, message[:500] or error_type))


class Tracing:
    """See the module docstring. ``Tracing.off()`` records nothing and costs a no-op call per span."""

    def __init__(self, settings: TraceSettings, *, exporter: SpanExporter | None = None,
                 redact: Redact | None = None, batch: bool = True) -> None:
        """``exporter``: where spans go (default: OTLP/HTTP to ``settings.endpoint``; tests give an in-memory
        one, which turns tracing on whatever the settings); ``batch`` False exports each span as it ends."""
        self.settings = settings
        self._redact = redact
        self._ids = _ChosenIds()
        self._provider: TracerProvider | None = None
        self._processor: SpanProcessor | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        if exporter is None and settings.endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=settings.export_timeout_seconds)
        if exporter is None:
            return
        self._provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                                        id_generator=self._ids)
        if batch:
            self._processor = BatchSpanProcessor(
                exporter, max_queue_size=settings.max_queue_size,
                schedule_delay_millis=settings.schedule_delay_millis,
                max_export_batch_size=min(512, settings.max_queue_size),
                export_timeout_millis=settings.export_timeout_seconds * 1000)
        else:
            self._processor = SimpleSpanProcessor(exporter)
        self._provider.add_span_processor(self._processor)
        self.tracer = self._provider.get_tracer(genai.SCOPE, schema_url=genai.SCHEMA_URL)

    @classmethod
    def off(cls) -> Tracing:
        return cls(TraceSettings())

    @classmethod
    def build(cls, settings: TraceSettings, *, redact: Redact | None = None) -> Tracing:
        return cls(settings, redact=redact)

    @classmethod
    def for_child(cls, env: Mapping[str, str], service_name: str) -> tuple[Tracing, str | None]:
        """The tracer of a process that runs one attempt (a step pod, a local run's step process) from the
        standard OTEL_* variables, and a warning when they are unusable (tracing is then off: it never keeps a
        step from running). Content is never recorded there (AGENTFLOW_TRACE_CONTENT is not honoured)."""
        try:
            settings = TraceSettings.from_env(env, content=False, service_name=service_name)
        except ValueError as exc:
            return cls.off(), f"{exc}; this process exports no spans"
        return (cls.build(dataclasses.replace(settings, content=False)) if settings.enabled else cls.off()), None

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @property
    def records_content(self) -> bool:
        return self.enabled and self.settings.content and self._redact is not None

    # ---------------------------------------------------------------- spans

    def emit(self, records: Iterable[SpanRecord]) -> None:
        """Send spans a driver derived from its journal, with their own ids and times. Never raises: a span that
        cannot be sent is logged and dropped (the driver's journal append has happened; tracing must not undo it)."""
        if self._provider is None:
            return
        for record in records:
            try:
                self._emit(record)
            except Exception:
                log.warning("tracing: span %r could not be sent; dropped", record.name, exc_info=True)

    def _emit(self, record: SpanRecord) -> None:
        parent = (context_of(SpanIds(record.trace_id, record.parent_id), Context())
                  if record.parent_id is not None else Context())
        token = self._ids.chosen.set(SpanIds(record.trace_id, record.span_id))
        try:
            span = self.tracer.start_span(record.name, context=parent, kind=SpanKind.INTERNAL,
                                          attributes=dict(record.attributes),
                                          start_time=int(record.start * 1e9))
        finally:
            self._ids.chosen.reset(token)
        if record.error is not None:
            span.set_status(Status(StatusCode.ERROR, record.message[:500] or record.error))
        span.end(end_time=int(record.end * 1e9))

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None, *,
             kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
        """A live span, child of the current context, current inside the block. An exception leaving the block
        sets ``error.type`` to its ``type`` attribute (AgentFlow errors) or its class name."""
        if self._provider is None:
            yield trace.INVALID_SPAN
            return
        attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        with self.tracer.start_as_current_span(name, kind=kind, attributes=attrs, record_exception=False,
                                               set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as exc:
                error = getattr(exc, "type", None)
                fail(span, error if isinstance(error, str) and error else type(exc).__name__, str(exc))
                raise

    def content(self, value: Any) -> str | None:
        """``value`` as JSON text to record, redacted; None unless content recording is on."""
        if not self.records_content or self._redact is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        try:
            redacted = self._redact(text)
        except Exception:  # a redactor that fails must not leak the text: nothing is recorded
            return None
        return redacted[:MAX_CONTENT_CHARS]

    def trace_url(self, trace_hex: str) -> str | None:
        template = self.settings.url_template
        return template.replace("{trace_id}", trace_hex) if template else None

    def shutdown(self, timeout_seconds: float = 2.0) -> None:
        """Flush what is queued for at most ``timeout_seconds`` (in a thread: a collector that hangs cannot
        hold the process), then stop exporting."""
        provider, self._provider = self._provider, None
        self.tracer = trace.NoOpTracer()
        if provider is None:
            return
        worker = threading.Thread(target=provider.shutdown, name="agentflow-trace-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_seconds)
