"""`ContextSpanExporter`: the OTel SDK span exporter that turns LangChain spans into Context threads.

`export()` converts (cheap, in memory) and queues; uploads happen on background workers, so the
host app's threads never wait on the network, and nothing here ever raises into the app.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .assembly import TraceBuffer
from .bridge import Bridge
from .config import ConfigError, ExporterSettings, resolve_settings
from .delivery import DeliveryQueue
from .spans.sdk import records_from_sdk
from .telemetry import Counters

_logger = logging.getLogger("otel_context")


class ContextSpanExporter(SpanExporter):
    """Export LangChain runs to Context as conversation threads.

    Every keyword argument overrides its `OTEL_EXPORTER_CONTEXT_*` variable (see `config.py`):
    `token`, `endpoint`, `timeout` (seconds), `insecure`, `spool_dir`, `queue_size`, ...
    """

    def __init__(self, *, counters: Counters | None = None, register_metrics: bool = True, **settings: object):
        self.settings: ExporterSettings = resolve_settings(**settings)
        self.bridge = Bridge(self.settings, counters)
        self.bridge.start_ticker()
        self.counters = self.bridge.counters
        self._closed = False
        self._lock = threading.Lock()
        if register_metrics:
            try:
                self.counters.register_metrics()
            except Exception:  # metrics are a bonus, never a reason to fail
                _logger.debug("otel-context could not register its metrics", exc_info=True)

    @property
    def buffer(self) -> TraceBuffer:
        return self.bridge.buffer

    @property
    def delivery(self) -> DeliveryQueue:
        return self.bridge.delivery

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            accepted = self.bridge.accept(records_from_sdk(spans))
        except Exception:  # the host app must never see our errors
            _logger.exception("otel-context failed to export a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if accepted else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._closed:
            return True
        try:
            return self.bridge.flush(timeout_millis / 1000)
        except Exception:
            _logger.exception("otel-context force_flush failed")
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.bridge.shutdown(timeout_millis / 1000)
        except Exception:
            _logger.exception("otel-context shutdown failed")

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()


__all__ = ["ConfigError", "ContextSpanExporter"]
