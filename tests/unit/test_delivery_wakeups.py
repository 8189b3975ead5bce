"""Delivery's waits are woken by the event they wait for, never by a poll: each test here waits with no
timeout (or one far longer than the test), so it fails if the notify it relies on is removed. And the
layers meet through one interface: retry -> read-back -> timeout -> send.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from otel_context.config import resolve_settings
from otel_context.counters import Counters
from otel_context.delivery import Delivery, DeliveryQueue
from otel_context.delivery.helper import HelperDelivery
from otel_context.delivery.helper_wire import ACKS
from otel_context.delivery.item import ItemKind, QueueItem
from otel_context.delivery.outcome import SendOutcome, Verdict
from otel_context.delivery.queue import SendingQueue
from otel_context.delivery.readback import ReadBackSender
from otel_context.delivery.retry import Backoff, RetryingSender
from otel_context.delivery.timeout import TimeoutLayer

WOKEN_WITHIN_S = 5.0  # far under any deadline below: a wake-up that comes at all comes at once


def item(thread_id: str) -> QueueItem:
    return QueueItem(thread_id, thread_id.encode(), ItemKind.THREAD, segment=f"{thread_id}/1")


def in_thread(call) -> tuple[threading.Thread, list]:
    got: list = []
    thread = threading.Thread(target=lambda: got.append(call()), daemon=True)
    thread.start()
    return thread, got


def test_a_taker_waiting_with_no_timeout_is_woken_by_an_offer():
    queue = SendingQueue(100)
    taker, got = in_thread(lambda: queue.take(lambda: False, 4))
    taker.join(0.2)
    assert taker.is_alive() and not got  # asleep, nothing to take
    queue.offer([item("a")])
    taker.join(WOKEN_WITHIN_S)
    assert [[i.thread_id for i in batch] for batch in got] == [["a"]]


def test_a_taker_is_woken_by_a_stop():
    queue = SendingQueue(100)
    stopping = threading.Event()

    def stop() -> None:
        with queue.cond:  # whoever makes `stop()` true notifies under the lock (DeliveryQueue._stop does)
            stopping.set()
            queue.cond.notify_all()

    taker, got = in_thread(lambda: queue.take(stopping.is_set, 4))
    taker.join(0.2)
    assert taker.is_alive()
    stop()
    taker.join(WOKEN_WITHIN_S)
    assert got == [[]]


def test_idle_reads_the_queue_under_its_lock():
    queue = SendingQueue(100)
    assert queue.idle()
    with queue.cond:  # held by another thread: idle() waits for it instead of reading half-changed state
        reader, got = in_thread(queue.idle)
        reader.join(0.2)
        assert reader.is_alive() and not got
        queue.offer([item("a")])
    reader.join(WOKEN_WITHIN_S)
    assert got == [False]


class Gate:
    """A sender whose tries wait for `open`: what is in flight stays in flight until the test says."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.sent: list[str] = []

    def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]:
        self.open.wait()
        self.sent += [i.thread_id for i in items]
        return [SendOutcome(Verdict.DELIVERED, 201) for _ in items]

    def stored_messages(self, thread_id: str) -> list[dict[str, Any]] | SendOutcome | None:
        return None

    def abort(self) -> None:
        self.open.set()


def test_a_flush_waiting_on_an_upload_is_woken_by_its_settle():
    gate = Gate()
    delivery = DeliveryQueue(gate, resolve_settings(token="t", concurrency=1), Counters())
    try:
        delivery.offer([item("a")], admitted=False)
        flusher, got = in_thread(lambda: delivery.flush(60.0))
        flusher.join(0.2)
        assert flusher.is_alive()  # the upload is held at the gate
        started = time.monotonic()
        gate.open.set()
        flusher.join(WOKEN_WITHIN_S)
        assert got == [True] and time.monotonic() - started < WOKEN_WITHIN_S and gate.sent == ["a"]
    finally:
        delivery.shutdown(1.0)


def test_a_backoff_is_cut_short_by_a_shutdown():
    class Busy(Gate):
        def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]:
            return [SendOutcome(Verdict.RETRY, 429, 60.0, "HTTP 429") for _ in items]  # wait a minute, it says

    counters = Counters()
    delivery = DeliveryQueue(Busy(), resolve_settings(token="t", concurrency=1, max_elapsed_s=600), counters)
    delivery.offer([item("a")], admitted=False)
    deadline = time.monotonic() + WOKEN_WITHIN_S
    while not counters.get("threads_retried") and time.monotonic() < deadline:
        time.sleep(0.01)  # the test polls, never the code under test
    started = time.monotonic()
    assert delivery.shutdown(0.0) == 1
    assert time.monotonic() - started < WOKEN_WITHIN_S


def test_a_helper_flush_is_woken_by_the_ack_it_waits_for():
    delivery = HelperDelivery(resolve_settings(token="t"), Counters(), fallback=lambda: None)  # type: ignore[arg-type,return-value]
    with delivery._cond:  # handed over, as `offer` does, without starting a helper process
        delivery._unsettled[0] = item("a")
        delivery._next_id = 1
    flusher, got = in_thread(lambda: delivery.flush(60.0))
    flusher.join(0.2)
    assert flusher.is_alive()
    ack = json.dumps({"acks": [0], "counters": {}}).encode()
    delivery._handle(None, [(ACKS, ack)])  # type: ignore[arg-type]
    flusher.join(WOKEN_WITHIN_S)
    assert got == [True]


def test_both_deliveries_offer_the_one_interface():
    names = {name for name in vars(Delivery) if not name.startswith("_")}
    assert names >= {"submit", "submit_rating", "offer", "flush", "flush_until", "shutdown", "spooled"}
    for implementation in (DeliveryQueue, HelperDelivery):
        assert names <= set(dir(implementation)), implementation


def test_an_unanswered_append_is_read_back_before_the_retry_layer_sends_it_again():
    """Read-back is below retry: the second try of an item whose first got no answer looks first."""
    calls: list[str] = []
    answers = [SendOutcome(Verdict.UNKNOWN, None, reason="no answer"), SendOutcome(Verdict.DELIVERED, 201)]

    class Api:
        def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]:
            calls.append("send")
            return [answers.pop(0) for _ in items]

        def stored_messages(self, thread_id: str) -> list[dict[str, Any]] | SendOutcome | None:
            calls.append("read")
            return None  # not stored: send again

        def abort(self) -> None:
            pass

    api = Api()
    counters = Counters()
    stack = RetryingSender(
        ReadBackSender(TimeoutLayer(api), api.stored_messages, counters).send_batch,
        Backoff(initial_s=0.0, max_s=0.0, jitter=0.0),
        60.0,
    )
    settled: list[Verdict] = []
    stack.deliver(
        [item("a")],
        wait=lambda seconds: False,
        on_retry=lambda outcome: None,
        deadline=lambda: float("inf"),
        settle=lambda done: settled.extend(outcome.verdict for _, outcome in done),
    )
    assert calls == ["send", "read", "send"] and settled == [Verdict.DELIVERED]
    assert counters.get("readbacks") == 1
