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
from .config import TOKEN_VARIABLES, ConfigError, ExporterSettings, resolve_settings
from .convert import ConversionOptions
from .delivery import ContextSender, DeliveryQueue
from .spans.sdk import records_from_sdk
from .telemetry import Counters

_logger = logging.getLogger("otel_context")


class ContextSpanExporter(SpanExporter):
    """Export LangChain runs to Context as conversation threads.

    Every keyword argument overrides its `OTEL_EXPORTER_CONTEXT_*` variable (see `config.py`):
    `token`, `endpoint`, `timeout` (seconds), `insecure`, `spool_dir`, `queue_size`, ...
    """

    def __init__(self, *, counters: Counters | None = None, register_metrics: bool = True, **settings: object):
        self.counters = counters or Counters()
        self.settings: ExporterSettings = resolve_settings(**settings)
        self._closed = False
        self._lock = threading.Lock()
        self._warned_token = False
        self.buffer = TraceBuffer(
            max_traces=self.settings.max_pending_traces,
            max_age_s=self.settings.pending_ttl_s,
            options=ConversionOptions(max_message_chars=self.settings.max_message_chars),
            counters=self.counters,
        )
        self._sender = ContextSender(self.settings)
        self.delivery = DeliveryQueue(self._sender.send, self.settings, self.counters)
        if register_metrics:
            try:
                self.counters.register_metrics()
            except Exception:
                _logger.debug("otel-context could not register its metrics", exc_info=True)

    @property
    def can_send(self) -> bool:
        """A token is needed except for a loopback endpoint (the local Context API may run without one)."""
        return bool(self.settings.token) or self.settings.loopback

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            threads = self.buffer.add(records_from_sdk(spans))
            if not threads:
                return SpanExportResult.SUCCESS
            if not self.can_send:
                self._warn_missing_token()
                self.counters.add("threads_dropped", len(threads))
                return SpanExportResult.FAILURE
            accepted = self.delivery.submit(threads)
            return SpanExportResult.SUCCESS if accepted == len(threads) else SpanExportResult.FAILURE
        except Exception:
            _logger.exception("otel-context failed to export a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._closed:
            return True
        try:
            return self.delivery.flush(timeout_millis / 1000)
        except Exception:
            _logger.exception("otel-context force_flush failed")
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            leftover = self.buffer.drain()
            if leftover and self.can_send:
                self.delivery.submit(leftover)
            left = self.delivery.shutdown(timeout_millis / 1000)
            self._sender.close()
            _logger.debug("otel-context shut down with %d thread(s) undelivered: %s", left, self.stats())
        except Exception:
            _logger.exception("otel-context shutdown failed")

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def _warn_missing_token(self) -> None:
        if not self._warned_token:
            self._warned_token = True
            _logger.error(
                "otel-context: no Context API token is set (%s); threads are dropped and counted in "
                "threads_dropped until one is configured.",
                ", ".join(TOKEN_VARIABLES),
            )


__all__ = ["ConfigError", "ContextSpanExporter"]
