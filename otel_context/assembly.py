"""Trace assembly: hold what a root will need until the root arrives, bounded in traces and age.

Children end before their parents, so a trace reaches us over several batches, the root last. For
every GenAI span that is not a root we keep only a compact `Contribution` (models, usage); when a
root arrives its descendants are collected and the thread is built. The receiver, where spans of a
trace come from many services in any order, sets `settle_s` so a root waits briefly for stragglers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .conventions import Convention, SpanClass, convention_for
from .convert import DEFAULT_OPTIONS, Contribution, ConversionOptions, contribution, convert_root, descendants_of
from .model import ConversationThread, SpanRecord
from .telemetry import Counters

_logger = logging.getLogger(__name__)
ROOT_CLASSES = (SpanClass.CHAIN_ROOT, SpanClass.LLM_STANDALONE)


@dataclass(slots=True)
class _TraceEntry:
    first_seen: float
    items: list[Contribution] = field(default_factory=list)
    span_ids: set[int] = field(default_factory=set)  # a Collector retry may deliver a span twice


@dataclass(slots=True)
class _PendingRoot:
    due: float
    span: SpanRecord
    span_class: SpanClass
    convention: Convention


class TraceBuffer:
    """Turns batches of spans into threads; safe to call from many threads at once."""

    def __init__(
        self,
        *,
        max_traces: int = 10_000,
        max_age_s: float = 600.0,
        settle_s: float = 0.0,
        options: ConversionOptions = DEFAULT_OPTIONS,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        remember_roots: int = 100_000,
    ) -> None:
        self.max_traces = max_traces
        self.max_age_s = max_age_s
        self.settle_s = settle_s
        self.options = options
        self.counters = counters or Counters()
        self._clock = clock
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, _TraceEntry] = OrderedDict()
        self._held = 0
        self._pending: dict[tuple[int, int], _PendingRoot] = {}
        self._done: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._remember = remember_roots
        self.counters.gauge("spans_held", lambda: self._held)

    def add(self, spans: Iterable[SpanRecord]) -> list[ConversationThread]:
        """Take a batch; return the threads of the roots it completes (and of roots now due)."""
        now = self._clock()
        received = ignored = 0
        with self._lock:
            for span in spans:
                received += 1
                found = convention_for(span.attributes)
                if found is None:
                    ignored += 1
                    continue
                convention, span_class = found
                key = (span.trace_id, span.span_id)
                if key in self._done or key in self._pending:
                    self.counters.add("duplicates")
                    continue
                if span_class in ROOT_CLASSES:
                    self._pending[key] = _PendingRoot(now + self.settle_s, span, span_class, convention)
                else:
                    self._hold(span, convention, now)
            ready = self._take_due(now)
            self._evict(now)
        self.counters.add("spans_received", received)
        self.counters.add("spans_ignored", ignored)
        return self._convert(ready)

    def due(self) -> list[ConversationThread]:
        """Threads of roots whose settle time has passed (the receiver calls this on a timer)."""
        now = self._clock()
        with self._lock:
            ready = self._take_due(now)
            self._evict(now)
        return self._convert(ready)

    def drain(self) -> list[ConversationThread]:
        """At shutdown: build every pending root now; held spans without a root are evicted."""
        with self._lock:
            ready = self._take_due(float("inf"))
            self._evict(float("inf"))
        return self._convert(ready)

    @property
    def held_spans(self) -> int:
        return self._held

    @property
    def pending_roots(self) -> int:
        """Roots waiting out their settle time: threads about to be queued."""
        return len(self._pending)

    @property
    def held_traces(self) -> int:
        return len(self._traces)

    def _hold(self, span: SpanRecord, convention: Convention, now: float) -> None:
        if (span.trace_id, span.parent_id) in self._done:
            self.counters.add("spans_late")  # its root's thread is already built
            return
        entry = self._traces.get(span.trace_id)
        if entry is None:
            entry = self._traces[span.trace_id] = _TraceEntry(now)
        elif span.span_id in entry.span_ids:
            self.counters.add("duplicates")
            return
        entry.span_ids.add(span.span_id)
        entry.items.append(contribution(span, convention))
        self._held += 1

    def _take_due(self, now: float) -> list[tuple[_PendingRoot, list[Contribution]]]:
        if not self._pending:
            return []
        ready = []
        for key in [k for k, p in self._pending.items() if p.due <= now]:
            pending = self._pending.pop(key)
            ready.append((pending, self._collect(pending.span)))
            self._done[key] = None
            if len(self._done) > self._remember:
                self._done.popitem(last=False)
        return ready

    def _collect(self, root: SpanRecord) -> list[Contribution]:
        """Remove and return the held contributions under `root`."""
        entry = self._traces.get(root.trace_id)
        if entry is None:
            return []
        found = descendants_of(root.span_id, entry.items)
        if found:
            taken = {item.span_id for item in found}
            entry.items = [item for item in entry.items if item.span_id not in taken]
            entry.span_ids -= taken
            self._held -= len(found)
        if not entry.items:
            del self._traces[root.trace_id]
        return found

    def _evict(self, now: float) -> None:
        """Drop the oldest traces beyond the count bound or past the age bound, counting them."""
        traces = self._traces
        while traces:
            trace_id, entry = next(iter(traces.items()))
            if len(traces) <= self.max_traces and now - entry.first_seen <= self.max_age_s:
                break
            del traces[trace_id]
            self._held -= len(entry.items)
            self.counters.add("traces_evicted")
            self.counters.add("spans_evicted", len(entry.items))

    def _convert(self, ready: list[tuple[_PendingRoot, list[Contribution]]]) -> list[ConversationThread]:
        threads = []
        for pending, descendants in ready:
            try:
                threads.append(
                    convert_root(pending.span, pending.span_class, pending.convention, descendants, self.options)
                )
            except Exception:  # a reader bug must cost one thread, never the batch or the host app
                self.counters.add("conversion_errors")
                _logger.exception("otel-context could not convert root span %s", pending.span.span_hex)
        self.counters.add("threads_converted", len(threads))
        return threads
