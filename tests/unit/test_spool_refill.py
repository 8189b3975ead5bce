"""A spooled queue loads rows from disk (after an overflow, a rescan, an unpark) while producers are still
offering: a row on disk whose offer has not yet queued it must be loaded once, by one of the two.

The soak found it (`python -m bench.soak`: 184 of 371,002 acknowledged traces stored twice): a rescan's
refill read rows an offer had committed but not yet queued, and the offer then queued them again.
"""

from __future__ import annotations

import threading

from otel_context.delivery.item import ItemKind, QueueItem
from otel_context.delivery.queue import SendingQueue
from otel_context.delivery.spool import Spool

WAIT_S = 10.0


class PausingSpool(Spool):
    """A real spool whose `add` stops after its commit until `go` is set: the window between a row on disk
    and the offer that queues it, held open."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.committed = threading.Event()
        self.go = threading.Event()

    def add(self, items):
        seqs = super().add(items)
        self.committed.set()
        assert self.go.wait(WAIT_S)
        return seqs


def item(thread_id: str) -> QueueItem:
    return QueueItem(thread_id, thread_id.encode(), ItemKind.THREAD, segment=f"{thread_id}/1")


def take_all(queue: SendingQueue) -> list[str]:
    """Every item the queue hands out, each settled as delivered at once, until the spool is empty."""
    taken: list[str] = []
    while batch := queue.take(lambda: queue.spool.count() == 0 and not queue._items, 10):
        taken.extend(got.thread_id for got in batch)
        queue.remove_rows([], batch)
        queue.settle_delivered(batch)
    return taken


def test_a_refill_during_an_offer_does_not_load_its_rows_twice(tmp_path):
    spool = PausingSpool(tmp_path, 10_000_000)
    queue = SendingQueue(100, spool, rescan_s=0.05)
    offer = threading.Thread(target=lambda: queue.offer([item("a"), item("b")]), daemon=True)
    offer.start()
    assert spool.committed.wait(WAIT_S)  # the rows are on disk; the offer has not queued them
    queue.unpark()  # the refill a rescan or an unpark asks for
    taker_result: list[list[str]] = []
    taker = threading.Thread(target=lambda: taker_result.append(take_all(queue)), daemon=True)
    taker.start()
    taker.join(0.3)
    spool.go.set()
    offer.join(WAIT_S)
    taker.join(WAIT_S)
    assert not taker.is_alive()
    rest = take_all(queue)
    assert sorted(taker_result[0] + rest) == ["a", "b"]
    assert spool.count() == 0


def test_rows_past_an_offer_in_progress_are_loaded_once_it_ends(tmp_path):
    """The refill that must skip an offer's rows loads them later: nothing is left on disk unsent."""
    spool = PausingSpool(tmp_path, 10_000_000)
    queue = SendingQueue(1, spool, rescan_s=0.05)  # room for one: the second offer overflows to disk
    spool.go.set()
    queue.offer([item("a")])
    queue.offer([item("b"), item("c")])
    spool.go.clear()
    spool.committed.clear()
    offer = threading.Thread(target=lambda: queue.offer([item("d")]), daemon=True)
    offer.start()
    assert spool.committed.wait(WAIT_S)
    first = queue.take(lambda: False, 10)
    queue.remove_rows([], first)
    queue.settle_delivered(first)
    spool.go.set()
    offer.join(WAIT_S)
    assert sorted([i.thread_id for i in first] + take_all(queue)) == ["a", "b", "c", "d"]
    assert spool.count() == 0
