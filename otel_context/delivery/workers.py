"""Delivery: queue -> retry -> read-back -> timeout -> send, as the Collector's exporterhelper stacks them
(`layers.py`), run by background workers.

`submit` never waits on the network: it appends to memory (and, with a spool, to disk) and returns.
Workers take items from the `SendingQueue` (up to `batch` at once, sent one after another on one
connection), hand them to the `RetryingSender`, and settle each: removed when delivered or refused
for good, parked in the spool for a slow retry (or dropped and counted without a spool) when retries
ran out. Every drop is counted in `threads_dropped`; an upload given up while it may have been stored
(never sent again blindly: `readback.py`) in `threads_unconfirmed`.

Fork-safe (the pipeline calls `reset_after_fork`): a forked child (gunicorn `--preload`, Celery prefork,
multiprocessing) starts with an empty queue, fresh locks and no workers until its first thread; the
parent's queued work stays the parent's and is never sent twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from opentelemetry.instrumentation.utils import suppress_instrumentation

from ..config import ExporterSettings
from ..counters import Counters
from ..environment_variables import OTEL_EXPORTER_CONTEXT_TOKEN
from ..model import ConversationThread
from .item import ItemKind, QueueItem, rating_item, thread_items
from .layers import Sender
from .outcome import SendOutcome, Verdict
from .queue import SendingQueue
from .readback import ReadBackSender
from .retry import Backoff, RetryingSender
from .spool import Spool
from .timeout import TimeoutLayer

_logger = logging.getLogger(__name__)
ABORT_GRACE_S = 0.5  # after a shutdown deadline: how long uploads cut short get to report back


def count_drops(counters: Counters, logged: set[str], count: int, why: str, logger: logging.Logger = _logger) -> None:
    """Count `count` threads dropped, and say why once per cause (`logged` holds the causes said)."""
    counters.add("threads_dropped", count)
    if f"drop-{why}" not in logged:
        logged.add(f"drop-{why}")
        logger.warning(
            "otel-context dropped thread(s): %s (this is logged once; threads_dropped counts every one)", why
        )


class DeliveryQueue:
    """The sending queue, its workers, retries and counters; one per exporter or sidecar (a `Delivery`)."""

    def __init__(
        self,
        sender: Sender,
        settings: ExporterSettings,
        counters: Counters,
        *,
        on_settled: Callable[[QueueItem], None] = lambda item: None,
    ) -> None:
        """`sender.send_batch(items)`: one try of each item, an outcome each, in order; `sender.abort()` cuts
        uploads in flight short when a shutdown reaches its deadline. `on_settled(item)` runs once an item
        is settled and counted (the helper process acks it to the app)."""
        self.settings = settings
        self.counters = counters
        self._on_settled = on_settled
        spool = Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None
        self.queue = SendingQueue(
            settings.queue_size, spool, rescan_s=settings.spool_retry_s / 4, per_take=settings.batch_size
        )
        self.timeout = TimeoutLayer(sender)
        self.read_back = ReadBackSender(
            self.timeout,
            sender.stored_messages,
            counters,
            at_least_once=settings.at_least_once,
            before_send=self.queue.mark_attempted,
        )
        self.retry = RetryingSender(
            self.read_back.send_batch,
            Backoff(initial_s=settings.retry_initial_s, max_s=settings.retry_max_s),
            settings.max_elapsed_s,
        )
        self._reset_state()
        counters.gauge("threads_queued", self.pending)
        replayed = self.queue.load_spool()
        self.counters.add("threads_replayed", replayed)
        if self.queue.spool is not None:
            self._start()  # replay, slow retries, and rows of dead processes sharing the directory

    def _reset_state(self) -> None:
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self.timeout.deadline = float("inf")  # no new try starts past this instant (a shutdown sets it)
        self._logged: set[str] = set()
        self._parked = False  # rows were parked since the last delivered upload

    @property
    def spool(self) -> Spool | None:
        return self.queue.spool

    @property
    def spooled(self) -> bool:
        return self.queue.spool is not None

    def reset_after_fork(self) -> None:
        """In a forked child: an empty queue, a spool owner of its own, no workers until the first thread."""
        self.queue.reset_after_fork()
        self._reset_state()
        if self.queue.spool is not None:
            self._start()

    # -- producer side ----------------------------------------------------------------------------
    def submit(self, threads: Iterable[ConversationThread], *, admitted: bool = False) -> int:
        """Queue threads for upload; returns how many were accepted (the rest are counted as dropped).

        `admitted=True` is for callers that push back before accepting work (the sidecar answers 503
        when `backlog_full()`): their threads may pass the bound by one request's worth, never dropped.
        """
        return self.offer(thread_items(threads), admitted=admitted)

    def submit_rating(self, thread_id: str, index: int, rating: int) -> None:
        """Queue a PATCH that sets `rating` on message `index` of a thread (after its pending upload)."""
        self.offer([rating_item(thread_id, index, rating)], admitted=True)

    def offer(self, items: list[QueueItem], *, admitted: bool) -> int:
        """Queue items already encoded (`submit`'s, or those a helper process was handed); how many were
        accepted (the rest are counted as dropped)."""
        if not items:
            return 0
        if self._stopping:
            self._drop(len(items), "the exporter is shut down")
            return 0
        offered = self.queue.offer(items, admitted=admitted)
        if offered.spool_error is not None:
            self._log_once("spool-error", "otel-context cannot write its spool (%s)", offered.spool_error)
        if self.queue.spool is not None:
            self.counters.add("threads_spooled", offered.accepted)
        if offered.refused:
            why = "the spool is full" if self.queue.spool is not None else "the delivery queue is full"
            self._drop(offered.refused, "the spool is not writable" if offered.spool_error else why)
        self._start()
        return offered.accepted

    def backlog_full(self, coming: int = 0) -> bool:
        """Whether new work should wait: the memory queue (or the spool) plus `coming` is at 90 %."""
        spool = self.queue.spool
        if spool is not None:
            return spool.size_bytes >= 0.9 * spool.max_bytes
        return self.queue.size() + coming >= 0.9 * self.settings.queue_size

    def pending(self) -> int:
        """Threads not yet delivered: queued in memory, in flight, or waiting in the spool."""
        return self.queue.pending()

    # -- waiting ----------------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until the threads queued so far are delivered, refused, or given up; False if time ran out.

        With a spool they are on disk before `submit` returns, which is as durable as delivered: no wait.
        Threads queued meanwhile are not waited for (a busy app would otherwise never see the end).
        """
        return self.flush_until(time.monotonic() + timeout_s)

    def flush_until(self, deadline: float) -> bool:
        """`flush` with a monotonic deadline."""
        return True if self.queue.spool is not None else self._drain(deadline)

    def _drain(self, deadline: float) -> bool:
        ids = self.queue.held_ids()
        return self._wait(lambda: not self.queue.holds_any(ids), deadline)

    def _wait(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait for `done()` (checked under the queue's lock; every settle notifies a watcher), or `deadline`."""
        cond = self.queue.cond
        with cond:
            self.queue.watchers += 1
            try:
                return cond.wait_for(done, timeout=max(0.0, deadline - time.monotonic()))
            finally:
                self.queue.watchers -= 1

    # -- lifecycle --------------------------------------------------------------------------------
    def shutdown(self, timeout_s: float) -> int:
        """Deliver what is queued within `timeout_s`, then stop; returns what was left undelivered.

        Past the deadline, tries in flight are cut short; what is left stays in the spool (replayed or
        claimed later) or, without one, is dropped and counted. Never takes much longer than `timeout_s`.
        """
        try:
            self._drain(time.monotonic() + max(0.0, timeout_s - ABORT_GRACE_S))
        finally:  # Ctrl-C while waiting: stop at once, the same way
            left = self._stop()
        return left

    def _stop(self) -> int:
        before = self._given_up()
        with self.queue.cond:
            self._stopping = True
            self.timeout.deadline = min(self.timeout.deadline, time.monotonic())
            self.queue.cond.notify_all()
        if not self.queue.idle():
            self.timeout.cut_short()
        grace = time.monotonic() + ABORT_GRACE_S
        for worker in self._workers:
            worker.join(timeout=max(0.0, grace - time.monotonic()))
        waiting, in_flight = self.queue.take_all()
        for item in in_flight:
            item.abandoned = True  # its worker, if it ever reports back, counts nothing more
        left = [item for item in waiting + in_flight if item.kind is ItemKind.THREAD]
        spool = self.queue.spool
        if spool is not None:
            remaining = spool.count()
            spool.close()
            return remaining
        unconfirmed = sum(item.unconfirmed for item in left)  # may be stored: not a drop
        self.counters.add("threads_unconfirmed", unconfirmed)
        self.counters.add("threads_dropped", len(left) - unconfirmed)
        return self._given_up() - before  # cut short by workers, or left queued

    def _given_up(self) -> int:
        return self.counters.get("threads_dropped") + self.counters.get("threads_unconfirmed")

    def _start(self) -> None:
        if self._workers or self._stopping:
            return
        with self.queue.cond:
            if self._workers:
                return
            for index in range(self.settings.concurrency):
                worker = threading.Thread(target=self._work, name=f"otel-context-delivery-{index}", daemon=True)
                self._workers.append(worker)
                worker.start()

    # -- consumer side ----------------------------------------------------------------------------
    def _work(self) -> None:
        # The exporter's own HTTP calls must not be traced (requests/urllib3 instrumentations would loop).
        with suppress_instrumentation():
            while items := self.queue.take(lambda: self._stopping, self.settings.batch_size):
                self.retry.deliver(items, self._sleep, self._on_retry, self._deadline, self._settle_all)

    def _deadline(self) -> float:
        with self.queue.cond:
            return self.timeout.deadline

    def _sleep(self, seconds: float) -> bool:
        """Wait between tries (time is the event); True when a shutdown cut the wait short (`_stop` notifies)."""
        with self.queue.cond:
            return self.queue.cond.wait_for(
                lambda: self._stopping and time.monotonic() >= self.timeout.deadline, seconds
            )

    def _on_retry(self, outcome: SendOutcome) -> None:
        self.counters.add("threads_retried")
        self._log_once(f"retry-{outcome.status}", "otel-context: upload failed (%s); retrying", outcome.reason)

    def _settle_all(self, settled: list[tuple[QueueItem, SendOutcome]]) -> None:
        """Settle the items of one try; the spool rows that go, in one transaction."""
        if self.queue.spool is not None:
            self.queue.remove_rows(
                [item for item, outcome in settled if outcome.verdict is Verdict.REJECTED and not item.abandoned],
                [item for item, outcome in settled if outcome.verdict is Verdict.DELIVERED],
            )
        if all(outcome.verdict is Verdict.DELIVERED and not item.abandoned for item, outcome in settled):
            self._settle_delivered([item for item, _ in settled])
            return
        for item, outcome in settled:
            self._settle(item, outcome)

    def _settle_delivered(self, items: list[QueueItem]) -> None:
        """`_settle` of a try whose items were all delivered (the usual one): counted at once, released from the
        queue under one lock, instead of a lock, a count and a wake-up check each."""
        self.counters.add("threads_uploaded", sum(item.kind is ItemKind.THREAD for item in items))
        if self._parked:  # as `_uploaded`
            self._parked = False
            self.queue.unpark()
        self.queue.settle_delivered(items)
        for item in items:
            self._on_settled(item)

    def _settle(self, item: QueueItem, outcome: SendOutcome) -> None:
        settle = self.queue.settle
        if item.abandoned:  # counted by the shutdown that gave up on it
            settle(item, keep_in_spool=outcome.verdict is not Verdict.DELIVERED)
        elif outcome.verdict is Verdict.DELIVERED:
            settle(item, account=lambda: self._uploaded(item))
        elif outcome.verdict is Verdict.REJECTED:
            settle(item, account=lambda: self._reject(outcome))
        elif self.queue.spool is not None:
            if self._stopping:  # left for the next start, or for another process to claim
                settle(item, keep_in_spool=True)
            else:
                settle(item, park_until=time.time() + self.settings.spool_retry_s, account=lambda: self._park(outcome))
        elif item.unconfirmed:
            settle(item, account=lambda: self._unconfirmed(outcome))
        elif self._stopping:
            settle(item, account=lambda: self.counters.add("threads_dropped"))  # the shutdown line reports it
        else:
            settle(item, account=lambda: self._drop(1, f"retries ran out ({outcome.reason})"))
        self._on_settled(item)

    def _uploaded(self, item: QueueItem) -> None:
        if item.kind is ItemKind.THREAD:  # a rating PATCH is not a thread
            self.counters.add("threads_uploaded")
        if self._parked:  # the API answers again: what waits in the spool goes now, not at its parked time
            self._parked = False
            self.queue.unpark()

    def _unconfirmed(self, outcome: SendOutcome) -> None:
        """Given up while it may be stored: never sent again blindly, so counted apart from drops."""
        self.counters.add("threads_unconfirmed")
        self._log_once(
            "unconfirmed",
            "otel-context: gave up on a thread whose earlier upload may have been stored (%s); it is not sent again "
            "(threads_unconfirmed counts these; a spool keeps them for a later read-back)",
            outcome.reason,
        )

    def _reject(self, outcome: SendOutcome) -> None:
        self.counters.add("threads_rejected")
        self._log_rejection(outcome)

    def _park(self, outcome: SendOutcome) -> None:
        self._parked = True
        self._log_once(
            "parked",
            "otel-context: retries ran out (%s); the thread stays in the spool and is tried again every %.0f s",
            outcome.reason,
            self.settings.spool_retry_s,
        )

    def _drop(self, count: int, why: str) -> None:
        count_drops(self.counters, self._logged, count, why)

    def _log_rejection(self, outcome: SendOutcome) -> None:
        if outcome.status == 401:
            self._log_once(
                "401",
                "otel-context: the Context API rejected the token (HTTP 401). Check %s; "
                "threads are not retried and are counted in threads_rejected.",
                OTEL_EXPORTER_CONTEXT_TOKEN,
            )
        else:
            self._log_once(
                f"reject-{outcome.status}", "otel-context: the Context API refused a thread: %s", outcome.reason
            )

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _logger.warning(message, *args)
