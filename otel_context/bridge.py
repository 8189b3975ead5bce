"""The pipeline both entry points share: span records in -> assembled traces -> threads -> delivery.

The in-process exporter feeds it SDK spans; the sidecar feeds it OTLP. One conversion, one delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .assembly import TraceBuffer
from .config import TOKEN_VARIABLES, ExporterSettings
from .convert import ConversionOptions
from .delivery import ContextSender, DeliveryQueue
from .model import SpanRecord
from .telemetry import Counters

_logger = logging.getLogger("otel_context")


class Bridge:
    """Holds the trace buffer, the delivery queue and the counters of one exporter or sidecar."""

    def __init__(
        self,
        settings: ExporterSettings,
        counters: Counters | None = None,
        *,
        settle_s: float = 0.0,
        push_back: bool = False,
    ):
        """`push_back=True` (the sidecar): callers check `backlog_full()` and refuse work instead of dropping."""
        self.settings = settings
        self.push_back = push_back
        self.counters = counters or Counters()
        self.buffer = TraceBuffer(
            max_traces=settings.max_pending_traces,
            max_age_s=settings.pending_ttl_s,
            settle_s=settle_s,
            options=ConversionOptions(max_message_chars=settings.max_message_chars),
            counters=self.counters,
        )
        self._sender = ContextSender(settings)
        self.delivery = DeliveryQueue(self._sender.send, settings, self.counters)
        self._warned_token = False

    @property
    def can_send(self) -> bool:
        """A token is needed except for a loopback endpoint (the local Context API may run without one)."""
        return bool(self.settings.token) or self.settings.loopback

    def accept(self, records: Iterable[SpanRecord]) -> bool:
        """Convert what these spans complete and queue it; False if any thread was dropped."""
        return self._submit(self.buffer.add(records))

    def tick(self) -> bool:
        """Queue the roots whose settle time has passed (the sidecar calls this on a timer)."""
        return self._submit(self.buffer.due())

    def backlog_full(self) -> bool:
        """True when new threads would be dropped: the sidecar then asks its Collector to retry later."""
        return self.delivery.backlog_full(coming=self.buffer.pending_roots)

    def flush(self, timeout_s: float) -> bool:
        return self.delivery.flush(timeout_s)

    def shutdown(self, timeout_s: float) -> int:
        """Build every pending root, deliver within `timeout_s`; the number of threads left undelivered."""
        self._submit(self.buffer.drain())
        left = self.delivery.shutdown(timeout_s)
        self._sender.close()
        _logger.debug("otel-context shut down with %d thread(s) undelivered: %s", left, self.counters.snapshot())
        return left

    def _submit(self, threads: list) -> bool:
        if not threads:
            return True
        if not self.can_send:
            self._warn_missing_token()
            self.counters.add("threads_dropped", len(threads))
            return False
        return self.delivery.submit(threads, admitted=self.push_back) == len(threads)

    def _warn_missing_token(self) -> None:
        if not self._warned_token:
            self._warned_token = True
            _logger.error(
                "otel-context: no Context API token is set (%s); threads are dropped and counted in "
                "threads_dropped until one is configured.",
                ", ".join(TOKEN_VARIABLES),
            )
