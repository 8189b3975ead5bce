"""The session's tracing: one TracerProvider, LangChain instrumented once, each test's spans routed to it.

The instrumentation can be instrumented only once per process (re-instrumenting after `uninstrument()`
yields no spans) and the OTel API sets the global tracer provider only once, so one TracerProvider
serves the whole session (the `tracing` fixture starts it) and each test plugs its own span processor
into it: a real ContextSpanProcessor + ContextSpanExporter (`App`), or an in-memory one (`capture`).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_context import ContextSpanExporter, ContextSpanProcessor


class SpanRouter(SpanProcessor):
    """Sends spans to the current test's span processor, or nowhere between tests."""

    def __init__(self) -> None:
        self.target: SpanProcessor | None = None

    def on_start(self, span, parent_context=None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span) -> None:
        if self.target is not None:
            self.target.on_end(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.target.force_flush(timeout_millis) if self.target is not None else True


class Tracing:
    """The TracerProvider an app's own spans and the LangChain instrumentation use, and its router."""

    def __init__(self) -> None:
        self.router = SpanRouter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "test-app"}))
        self.provider.add_span_processor(self.router)

    def start(self) -> Tracing:
        """Make it the global provider (what other instrumentations use) and instrument LangChain: once a process."""
        trace.set_tracer_provider(self.provider)
        LangchainInstrumentor().instrument(tracer_provider=self.provider)
        return self


class App:
    """A LangChain app instrumented with OpenLLMetry, exporting through one exporter (ContextSpanExporter, OTLP)."""

    def __init__(self, exporter: SpanExporter, tracing: Tracing, **batch: int) -> None:
        self.exporter = exporter
        self.tracing = tracing
        batch = {"schedule_delay_millis": 50, **batch}
        if isinstance(exporter, ContextSpanExporter):  # as `OTEL_TRACES_EXPORTER=context` sets it up
            self.processor: BatchSpanProcessor = ContextSpanProcessor(exporter, **batch)
        else:
            self.processor = BatchSpanProcessor(exporter, **batch)
        self.tracer = tracing.provider.get_tracer("test-app")
        tracing.router.target = self.processor

    def flush(self) -> None:
        self.processor.force_flush()
        assert self.exporter.force_flush(30_000)

    def close(self) -> None:
        if self.tracing.router.target is self.processor:
            self.tracing.router.target = None
        self.processor.shutdown()
