"""The sending queue: bounded, drained by background workers with bounded concurrency and retries.

`submit` never waits on the network: it appends to memory (and, with a spool, to disk) and returns.
When the queue is full new threads are dropped and counted, never blocking the host app. Workers
retry transient failures with backoff until `max_elapsed_s`; a thread the API refuses for good is
counted as rejected and its cause logged once per kind of refusal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from opentelemetry.instrumentation.utils import suppress_instrumentation

from ..config import ExporterSettings
from ..model import ConversationThread
from ..telemetry import Counters
from .item import RATING, THREAD, QueueItem, encode_thread
from .retry import Backoff
from .sender import SendOutcome, Verdict
from .spool import Spool

_logger = logging.getLogger("otel_context.delivery")


class DeliveryQueue:
    """Memory queue + optional spool + worker threads started on first use."""

    def __init__(
        self,
        send: Callable[[QueueItem], SendOutcome],
        settings: ExporterSettings,
        counters: Counters,
    ) -> None:
        self._send = send  # (item) -> outcome
        self.settings = settings
        self.counters = counters
        self.backoff = Backoff(initial_s=settings.retry_initial_s, max_s=settings.retry_max_s)
        self._queue: deque[QueueItem] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._busy: set[str] = set()  # thread ids being uploaded: one request per thread at a time, in order
        self._queued: dict[str, QueueItem] = {}  # thread id -> its queued upload, replaced by a newer version
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self._deadline = float("inf")  # after shutdown(timeout): give up retrying past this instant
        self._overflow = False  # spool holds items that are not in memory yet
        self._cursor = 0  # highest spool seq loaded into memory
        self._logged: set[str] = set()
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None
        counters.gauge("threads_queued", self.pending)
        if self.spool is not None:
            replayed = self._refill()
            self.counters.add("threads_replayed", replayed)
            if replayed:
                self._start()

    # -- producer side ----------------------------------------------------------------------------
    def submit(self, threads: Iterable[ConversationThread], *, admitted: bool = False) -> int:
        """Queue threads for upload; returns how many were accepted (the rest are counted as dropped).

        `admitted=True` is for callers that push back before accepting work (the sidecar answers 503
        when `backlog_full()`): their threads may pass the bound by one request's worth, never dropped.
        """
        items = [QueueItem(t.id, encode_thread(t)) for t in threads]
        if not items:
            return 0
        if self._stopping:
            self._drop(len(items), "the exporter is shut down")
            return 0
        accepted = self._spool_items(items) if self.spool is not None else items
        with self._cond:
            fresh = [item for item in accepted if not self._coalesce(item)]
            room = len(fresh) if admitted else self.settings.queue_size - len(self._queue)
            if self.spool is not None and (self._overflow or room < len(fresh)):
                self._overflow = True  # on disk; workers will load them when memory frees up
                keep = []
            else:
                keep = fresh[: max(0, room)]
            self._enqueue(keep)
        if self.spool is None and len(keep) < len(fresh):
            self._drop(len(fresh) - len(keep), "the delivery queue is full")
        self._start()
        return len(accepted) if self.spool is not None else len(accepted) - len(fresh) + len(keep)

    def submit_rating(self, thread_id: str, index: int, rating: int) -> None:
        """Queue a PATCH that sets `rating` on message `index` of a thread (after its pending upload)."""
        body = json.dumps([{} for _ in range(index)] + [{"rating": rating}]).encode()
        items = [QueueItem(thread_id, body, RATING)]
        if self.spool is not None:
            items = self._spool_items(items)
        with self._cond:
            self._enqueue(items)
        self._start()

    def _coalesce(self, item: QueueItem) -> bool:
        """A newer version of a thread still waiting in the queue replaces the older one there."""
        queued = self._queued.get(item.thread_id)
        if queued is None or item.kind != THREAD:
            return False
        old_seq = queued.seq
        queued.body, queued.seq = item.body, item.seq
        if old_seq is not None and self.spool is not None:
            self.spool.remove(old_seq)
        return True

    def _enqueue(self, items: list[QueueItem]) -> None:
        """Append under the lock and wake workers."""
        for item in items:
            self._queue.append(item)
            if item.kind == THREAD:
                self._queued[item.thread_id] = item
            if item.seq is not None:
                self._cursor = max(self._cursor, item.seq)
        self._cond.notify(len(items) or 1)

    def _spool_items(self, items: list[QueueItem]) -> list[QueueItem]:
        assert self.spool is not None
        try:
            seqs = self.spool.add((item.thread_id, item.kind, item.body) for item in items)
        except Exception as error:
            self._log_once("spool-error", "otel-context cannot write its spool (%s); threads are dropped", error)
            self._drop(len(items), "the spool is not writable")
            return []
        stored = []
        for item, seq in zip(items, seqs, strict=True):
            if seq is not None:
                item.seq = seq
                stored.append(item)
        self.counters.add("threads_spooled", len(stored))
        if len(stored) < len(items):
            self._drop(len(items) - len(stored), "the spool is full")
        return stored

    def backlog_full(self, coming: int = 0) -> bool:
        """Whether new work should wait: the memory queue (or the spool) plus `coming` is at 90 %."""
        if self.spool is not None:
            return self.spool.size_bytes >= 0.9 * self.spool.max_bytes
        with self._cond:
            return len(self._queue) + coming >= 0.9 * self.settings.queue_size

    def pending(self) -> int:
        """Threads not yet delivered: queued in memory, in flight, or waiting in the spool."""
        if self.spool is not None:
            return self.spool.count()
        with self._cond:
            return len(self._queue) + self._in_flight

    # -- lifecycle --------------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is delivered or given up; False if time ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._in_flight or self._overflow:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def shutdown(self, timeout_s: float) -> int:
        """Deliver what is queued within `timeout_s`; return what is left (kept in the spool if any)."""
        self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic()
            left = list(self._queue)
            self._queue.clear()
            self._queued.clear()
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout=max(0.5, self.settings.timeout_s + 0.5))
        remaining = len(left) + (self.spool.count() - len(left) if self.spool is not None else 0)
        if left and self.spool is None:
            self._drop(len(left), "shutdown came before they could be delivered")
        elif self.spool is not None and remaining:
            _logger.warning("otel-context: %d thread(s) stay in the spool for the next start", remaining)
        if self.spool is not None:
            self.spool.close()
        return remaining

    def _start(self) -> None:
        if self._workers or self._stopping:
            return
        with self._cond:
            if self._workers:
                return
            for index in range(self.settings.concurrency):
                worker = threading.Thread(target=self._work, name=f"otel-context-delivery-{index}", daemon=True)
                self._workers.append(worker)
                worker.start()

    # -- consumer side ----------------------------------------------------------------------------
    def _next(self) -> QueueItem | None:
        with self._cond:
            while True:
                for index, item in enumerate(self._queue):
                    if item.thread_id not in self._busy:
                        del self._queue[index]
                        if self._queued.get(item.thread_id) is item:
                            del self._queued[item.thread_id]
                        self._busy.add(item.thread_id)
                        self._in_flight += 1
                        return item
                if self._stopping:
                    return None
                if self._overflow and not self._queue:
                    self._cond.release()
                    try:
                        self._refill()
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(0.5)

    def _refill(self) -> int:
        """Load spooled items not yet in memory (replay at start, catch-up after an overflow)."""
        assert self.spool is not None
        room = self.settings.queue_size - len(self._queue)
        rows = self.spool.read_after(self._cursor, max(1, room))
        with self._cond:
            self._enqueue([QueueItem(thread_id, body, kind, seq) for seq, thread_id, kind, body in rows])
            self._overflow = len(rows) >= max(1, room)
        return len(rows)

    def _work(self) -> None:
        # The exporter's own HTTP calls must not be traced (requests/urllib3 instrumentations would loop).
        with suppress_instrumentation():
            while (item := self._next()) is not None:
                try:
                    self._deliver(item)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._busy.discard(item.thread_id)
                        self._cond.notify_all()

    def _deliver(self, item: QueueItem) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            outcome = self._send(item)
            if outcome.verdict is Verdict.DELIVERED:
                if item.kind == THREAD:
                    self.counters.add("threads_uploaded")
                self._forget(item)
                return
            if outcome.verdict is Verdict.REJECTED:
                self.counters.add("threads_rejected")
                self._log_rejection(outcome)
                self._forget(item)
                return
            delay = self.backoff.delay(attempt, outcome.retry_after_s)
            now = time.monotonic()
            give_up_at = min(started + self.settings.max_elapsed_s, self._deadline)
            if now + delay > give_up_at:
                self._give_up(item, outcome)
                return
            self.counters.add("threads_retried")
            self._log_once(f"retry-{outcome.status}", "otel-context: upload failed (%s); retrying", outcome.reason)
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping and time.monotonic() >= self._deadline, delay):
                    self._give_up(item, outcome)
                    return

    def _give_up(self, item: QueueItem, outcome: SendOutcome) -> None:
        if item.seq is not None:
            return  # stays in the spool: replayed at the next start
        self._drop(1, f"retries ran out ({outcome.reason})")

    def _forget(self, item: QueueItem) -> None:
        if item.seq is not None and self.spool is not None:
            try:
                self.spool.remove(item.seq)
            except Exception as error:
                self._log_once("spool-remove", "otel-context cannot update its spool: %s", error)

    def _drop(self, count: int, why: str) -> None:
        self.counters.add("threads_dropped", count)
        self._log_once(f"drop-{why}", "otel-context dropped %d thread(s): %s (counted in threads_dropped)", count, why)

    def _log_rejection(self, outcome: SendOutcome) -> None:
        if outcome.status == 401:
            self._log_once(
                "401",
                "otel-context: the Context API rejected the token (HTTP 401). Check OTEL_EXPORTER_CONTEXT_TOKEN; "
                "threads are not retried and are counted in threads_rejected.",
            )
        else:
            self._log_once(
                f"reject-{outcome.status}", "otel-context: the Context API refused a thread: %s", outcome.reason
            )

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _logger.warning(message, *args)
