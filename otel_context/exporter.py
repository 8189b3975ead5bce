"""`ContextSpanExporter`: the OTel SDK span exporter that turns LangChain spans into Context threads.

`export()` converts (cheap, in memory) and queues; uploads happen on background workers, so the
host app's threads never wait on the network, and nothing here ever raises into the app.

One exception, asked for by the app: `provider.force_flush()`. The OTel specification says a span
processor's flush exports what it holds and then calls the exporter's `force_flush()`; the Python
SDK's `BatchSpanProcessor` does the first only. `ContextSpanProcessor` is a `BatchSpanProcessor` that
does both, in one timeout: its `force_flush()` returns once the threads of the spans ended so far are
delivered, spooled, or given up and counted. On AWS Lambda and other runtimes frozen between requests,
it returning then means the runs have left the process. `OTEL_TRACES_EXPORTER=context` installs it;
a plain `BatchSpanProcessor(ContextSpanExporter())` only hands the spans over when flushed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .assembly.trace_buffer import TraceBuffer
from .config import ConfigError, ExporterSettings, resolve_settings
from .counters import Counters
from .delivery import DeliveryQueue
from .delivery.helper import HelperDelivery
from .pipeline import Pipeline
from .spans.sdk import records_from_sdk
from .spans.sdk_logs import events_from_sdk_logs

_logger = logging.getLogger(__name__)
# Spans are converted in slices of this many: a whole batch (512 spans by default) converted at once keeps
# thousands of objects alive together, which the cyclic GC promotes to its oldest generation and then scans
# in full collections, on whichever thread allocates, the app's included (measured: twice the full
# collections of the OTLP exporter, about 20 µs per call of the app's CPU; with slices of 64, as many as it).
EXPORT_SLICE = 64


class ContextSpanExporter(SpanExporter):
    """Export LangChain runs to Context as conversation threads.

    Every keyword argument overrides its `OTEL_EXPORTER_CONTEXT_*` variable (see `config.py`):
    `token`, `endpoint`, `timeout` (seconds), `insecure`, `spool_dir`, `queue_size`, ...
    """

    def __init__(self, *, counters: Counters | None = None, register_metrics: bool = True, **settings: object):
        self.settings: ExporterSettings = resolve_settings(**settings)
        self.pipeline = Pipeline(self.settings, counters)
        self.pipeline.start_ticker()
        self.counters = self.pipeline.counters
        self._closed = False
        self._lock = threading.Lock()
        if register_metrics:
            try:
                self.counters.register_metrics()
            except Exception:  # metrics are a bonus, never a reason to fail
                _logger.debug("otel-context could not register its metrics", exc_info=True)

    @property
    def buffer(self) -> TraceBuffer:
        return self.pipeline.buffer

    @property
    def delivery(self) -> DeliveryQueue | HelperDelivery:
        return self.pipeline.delivery

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            accepted = True
            for start in range(0, len(spans), EXPORT_SLICE):
                accepted = self.pipeline.accept(records_from_sdk(spans[start : start + EXPORT_SLICE])) and accepted
        except Exception:  # the host app must never see our errors
            _logger.exception("otel-context failed to export a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if accepted else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every thread queued so far is delivered, spooled, or given up and counted."""
        if self._closed:
            return True
        try:
            return self.pipeline.flush(timeout_millis / 1000)
        except Exception:
            _logger.exception("otel-context force_flush failed")
            return False

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Deliver what is queued, within `OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT` (5 s) or `timeout_millis`
        if shorter: an exit never hangs on an API that is down. Ctrl-C while waiting ends it quietly."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.pipeline.shutdown(min(timeout_millis / 1000, self.settings.shutdown_timeout_s))
        except KeyboardInterrupt:
            _logger.warning("otel-context: shutdown interrupted; undelivered threads are counted in stats()")
        except Exception:
            _logger.exception("otel-context shutdown failed")

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()


_FLUSH_TIMEOUT_S = 30.0  # the SDK's own default for force_flush


class ContextSpanProcessor(BatchSpanProcessor):
    """A `BatchSpanProcessor` whose `force_flush()` is the specification's: export what it holds, then the
    exporter's `force_flush()`, both within one timeout. `provider.force_flush(timeout)` then returns only
    once the threads of the spans ended so far are delivered, spooled, or given up and counted.

        provider.add_span_processor(ContextSpanProcessor())  # or ContextSpanProcessor(exporter, **batch)

    What it relies on, all public: `BatchSpanProcessor(exporter, ...)` and its `force_flush()` exporting
    every span ended before it returns (`tests/unit/test_sdk_contract.py` fails loudly when a release
    changes that). Keyword arguments are the `BatchSpanProcessor`'s (`max_queue_size`, ...).
    """

    def __init__(self, exporter: ContextSpanExporter | None = None, **batch: object) -> None:
        self.exporter = exporter if exporter is not None else ContextSpanExporter()
        super().__init__(self.exporter, **batch)  # type: ignore[arg-type]

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        started = time.monotonic()
        flushed = super().force_flush(timeout_millis)
        budget_ms = timeout_millis if timeout_millis is not None else _FLUSH_TIMEOUT_S * 1000
        left_ms = max(0.0, budget_ms - (time.monotonic() - started) * 1000)
        return self.exporter.force_flush(int(left_ms)) and flushed is not False


def export_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    """The processor the SDK's configurator builds for each `OTEL_TRACES_EXPORTER` (`export_span_processor`):
    ours for ours, the SDK's own for the others."""
    if isinstance(exporter, ContextSpanExporter):
        return ContextSpanProcessor(exporter)
    return BatchSpanProcessor(exporter)


__all__ = ["ConfigError", "ContextSpanExporter", "ContextSpanProcessor"]


try:  # the SDK's logs API is still underscored; its exporter class was `LogExporter` before 1.39
    from opentelemetry.sdk._logs.export import LogRecordExporter as _LogExporterBase
    from opentelemetry.sdk._logs.export import LogRecordExportResult as _LogExportResult
except ImportError:  # pragma: no cover - older SDKs
    from opentelemetry.sdk._logs.export import LogExporter as _LogExporterBase  # type: ignore[no-redef]
    from opentelemetry.sdk._logs.export import LogExportResult as _LogExportResult  # type: ignore[no-redef]


class ContextLogExporter(_LogExporterBase):  # type: ignore[misc,valid-type]
    """GenAI events the app emits through the Logs API (`gen_ai.evaluation.result`), into the pipeline of a
    `ContextSpanExporter`: an evaluation joins its run's thread (metadata and rating) when the thread is not
    built yet, else rates its answer with a PATCH. Other log records are ignored.

        logs = LoggerProvider()
        logs.add_log_record_processor(BatchLogRecordProcessor(ContextLogExporter(span_exporter)))
    """

    def __init__(self, spans: ContextSpanExporter) -> None:
        self._spans = spans

    def export(self, batch):  # type: ignore[no-untyped-def]
        if self._spans._closed:
            return _LogExportResult.FAILURE
        try:
            self._spans.pipeline.accept_events(events_from_sdk_logs(batch))
        except Exception:  # never into the app
            _logger.exception("otel-context could not read log records")
            return _LogExportResult.FAILURE
        return _LogExportResult.SUCCESS

    def shutdown(self) -> None:
        """The span exporter's shutdown delivers what is left; nothing of its own to close."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
