"""Self-telemetry: what the pipeline converted, delivered, retried, rejected, dropped and held.

One `Counters` object per pipeline, shared by assembly and delivery. It is readable as a dict (CLI,
health endpoint, tests) and through the OTel metrics API, where each counter becomes an observable
instrument named `otel_context.<name>`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

# name -> (description, is a gauge rather than a monotonic counter)
COUNTERS: dict[str, tuple[str, bool]] = {
    "spans_received": ("Spans handed to the pipeline", False),
    "spans_ignored": ("Spans of no GenAI convention (HTTP, database, ...): nothing to convert", False),
    "spans_held": ("Spans held until their root arrives", True),
    "spans_evicted": (
        "Held spans dropped: their root never came in time, the buffer was full, or their trace held too many",
        False,
    ),
    "traces_evicted": ("Traces whose held spans were evicted", False),
    "spans_late": ("Spans that arrived after their root's thread was built", False),
    "duplicates": ("Roots delivered twice (e.g. a Collector retry) and converted once", False),
    "conversion_errors": ("Roots that could not be converted", False),
    "roots_empty": ("Wrapper spans with no content and nothing below them: no thread of their own", False),
    "spans_twinned": (
        "GenAI spans of a run another LangChain instrumentation described too (the official one beside"
        " OpenLLMetry's): dropped, that one's kept",
        False,
    ),
    "requests_pushed_back": (
        "OTLP requests the sidecar refused with 503: its queue was full, or its session store failing",
        False,
    ),
    "requests_logged": ("OTLP requests in the sidecar's write-ahead log whose traces are not finished yet", True),
    "requests_replayed": ("OTLP requests read back from the sidecar's write-ahead log at start", False),
    "wal_commits": ("Write-ahead log transactions, one fsync each: fewer than requests when group commit works", False),
    "threads_filtered": ("Threads not sent because of the include/exclude workflow filters", False),
    "threads_sampled_out": ("Threads not sent because of OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO", False),
    "ratings_sent": ("Feedback ratings queued as thread updates (PATCH)", False),
    "ratings_unmatched": ("Feedback that named a thread, session or trace this process does not know", False),
    "evaluations_received": ("Evaluation results received as log records (gen_ai.evaluation.result)", False),
    "evaluations_late": (
        "Evaluation log records of a run whose thread was sent already: a rating PATCH of its answer at most",
        False,
    ),
    "evaluations_unmatched": (
        "Evaluation log records whose run never came in time, or that name no trace (emitted outside a span)",
        False,
    ),
    "log_records_rejected": ("Log records the sidecar refused as invalid (OTLP partial success)", False),
    "threads_converted": ("Threads built from roots", False),
    "threads_incomplete": ("Threads built from a trace known to be incomplete (evicted or orphaned spans)", False),
    "spans_rejected": ("Spans the sidecar refused as invalid (OTLP partial success)", False),
    "threads_unpriced": ("Threads with token usage on a model no price is known for: no cost_usd", False),
    "threads_queued": ("Threads waiting in the delivery queue", True),
    "threads_uploaded": ("Threads the Context API accepted", False),
    "threads_retried": ("Upload attempts retried after a transient failure", False),
    "threads_rejected": ("Threads the API refused for good (400/401/403/404)", False),
    "threads_dropped": (
        "Threads dropped: queue full, spool full, or retries exhausted without a spool",
        False,
    ),
    "threads_unconfirmed": (
        "Uploads given up while an earlier try may have been stored: never sent again blindly (a spool keeps them)",
        False,
    ),
    "readbacks": ("Threads read back before resending an upload whose earlier try may have been stored", False),
    "readbacks_found": ("Read-backs that found the upload stored by its earlier try (not sent again)", False),
    "turns_repeated": (
        "Session turns converted again (a replay, a second copy): placed where they were, appended once",
        False,
    ),
    "threads_spooled": ("Threads written to the durable spool", False),
    "threads_replayed": ("Threads read back from the spool at start", False),
}


class Counters:
    """Thread-safe named counters; counters only grow, gauges are read from a live source (`gauge`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._gauges: dict[str, Callable[[], int]] = {}

    def reset_after_fork(self) -> None:
        """A forked child counts its own work from zero (the parent's lock may have been held at the fork)."""
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._values[name] += amount

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """Read `name` from a live source instead of storing it."""
        self._gauges[name] = read

    def get(self, name: str) -> int:
        read = self._gauges.get(name)
        if read is not None:
            return read()
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            values = dict(self._values)
        for name, read in self._gauges.items():
            values[name] = read()
        return values

    def register_metrics(self, meter_provider=None) -> None:
        """Expose every counter as an observable instrument on the given (or global) MeterProvider."""
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = (meter_provider or metrics.get_meter_provider()).get_meter("otel_context")

        def callback_for(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda _options: [Observation(self.get(name))]

        for name, (description, is_gauge) in COUNTERS.items():
            factory = meter.create_observable_gauge if is_gauge else meter.create_observable_counter
            factory(f"otel_context.{name}", callbacks=[callback_for(name)], description=description)
