"""The sending queue: what waits for upload, in memory or backed by the durable spool.

It orders and bounds, and knows nothing of HTTP: one upload per thread id at a time, in the order they
were offered (each is an append: two appends of one session thread never race, and go in the order the
turns completed); nothing is merged or replaced; a full memory queue refuses (or, with a spool, leaves
the rest on disk until memory frees up). As the Collector's
exporterhelper queue, one interface whatever the storage: `offer` on the producer side, `take` /
`settle` on the consumer side.

Wake-ups are designed, not polled: every wait is on `cond` with its predicate checked under the lock,
and whatever can make a predicate true notifies under that lock (`offer`, `settle`, `unpark`,
`take_all`, a stop). A taker waits without a timeout unless time itself is the event it waits for
(the next rescan of the spool); a flush waits until its deadline.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .item import ItemKind, QueueItem
from .spool import KNOWN, Spool


@dataclass(frozen=True, slots=True)
class Offered:
    """What `offer` did with a batch: queued (in memory or spooled) and refused for lack of room."""

    accepted: int
    refused: int
    spool_error: Exception | None = None


class SendingQueue:
    """Bounded memory queue over an optional spool; every method is thread-safe."""

    def __init__(
        self,
        capacity: int,
        spool: Spool | None = None,
        rescan_s: float = 60.0,
        per_take: int = 1,
    ) -> None:
        """`per_take`: how many items a worker takes at once; new items wake one idle worker per that many."""
        self.capacity = capacity
        self.per_take = per_take
        self.spool = spool
        self.rescan_s = rescan_s  # how often parked rows (retries ran out) and dead owners' rows are looked for
        self._reset()

    def _reset(self) -> None:
        self.cond = threading.Condition()
        self._items: deque[QueueItem] = deque()
        self._busy: dict[str, QueueItem] = {}  # thread id -> its upload in flight
        self._kept: set[str] = set()  # thread ids whose items a taker passed over: their upload was in flight
        self._loaded: set[int] = set()  # spool rows in memory or in flight
        self._cursor = 0  # highest spool row looked at since the last rescan
        self._overflow = False  # the spool holds rows not loaded yet
        # Offers writing to the spool now, each as the highest row queued before it began: their rows lie
        # above it, on disk before the offer queues them, so a refill must not load them too.
        self._offering: list[int] = []
        self._high = 0  # the highest spool row an offer of this process has finished with
        self._next_rescan = time.monotonic() + self.rescan_s
        self.closed = False
        self.watchers = 0  # threads waiting on `cond` for uploads to end (a flush): woken by every settle

    def reset_after_fork(self) -> None:
        """In a forked child: empty, with fresh locks; the parent's work stays the parent's."""
        self._reset()
        if self.spool is not None:
            self.spool.reopen_in_child()

    # -- producer side ------------------------------------------------------------------------------
    def offer(self, items: list[QueueItem], *, admitted: bool = False) -> Offered:
        """Queue items; with a spool they are on disk (fsync'd) before this returns.

        `admitted=True` is for callers that push back before accepting work (the sidecar answers 503
        first): their items may pass the memory bound by one request's worth instead of being refused.
        """
        refused = 0
        if self.spool is not None:
            with self.cond:
                floor = self._high
                self._offering.append(floor)
            try:
                seqs = self.spool.add((item.thread_id, item.kind.value, item.body, item.segment) for item in items)
            except Exception as failure:  # a full disk or a broken file: refused, never raised into the app
                with self.cond:
                    self._offering.remove(floor)
                return Offered(0, len(items), failure)
            stored = []
            for item, seq in zip(items, seqs, strict=True):
                if seq is None:
                    refused += 1
                elif seq != KNOWN:  # KNOWN: spooled or delivered already (a replay): accepted, not queued twice
                    item.seq = seq
                    stored.append(item)
            known = len(items) - refused - len(stored)
            items = stored
        else:
            known = 0
        with self.cond:
            if self.spool is not None:
                self._offering.remove(floor)
                self._high = max(self._high, *(item.seq for item in items if item.seq is not None), 0)
            room = len(items) if admitted else self.capacity - len(self._items)
            if self.spool is not None and (self._overflow or room < len(items)):
                self._overflow = True  # on disk; loaded when memory frees up
                keep: list[QueueItem] = []
            else:
                keep = items[: max(0, room)]
            self._enqueue(keep)
        unqueued = 0 if self.spool is not None else len(items) - len(keep)  # with a spool, the rest waits on disk
        return Offered(len(items) + known - unqueued, refused + unqueued)

    def _enqueue(self, items: Iterable[QueueItem]) -> None:
        count = 0
        for item in items:
            count += 1
            self._items.append(item)
            if item.seq is not None:
                self._loaded.add(item.seq)
                self._cursor = max(self._cursor, item.seq)
        # One idle worker per `per_take` items: a worker takes that many at once, and a batch that one
        # worker can send wakes no other (each wake-up is a GIL hand-off in the app's process).
        if self.watchers:  # a flush waits on the same condition: a single wake-up could go to it
            self.cond.notify_all()
        else:
            self.cond.notify(max(1, -(-count // self.per_take)))

    # -- consumer side ------------------------------------------------------------------------------
    def take(self, stop: Callable[[], bool], limit: int = 1) -> list[QueueItem]:
        """Up to `limit` items whose threads have no upload in flight, oldest first: waits for the first,
        not for more; [] once `stop()` is true (whoever makes it true notifies `cond`). Only the first may
        be a rating: a rating goes through the client alone, and after its thread's upload (which this
        never takes with it)."""
        with self.cond:
            while True:
                if stop():
                    return []
                taken: list[QueueItem] = []
                index = 0
                while index < len(self._items) and len(taken) < limit:
                    item = self._items[index]
                    if item.thread_id in self._busy:
                        self._kept.add(item.thread_id)
                        index += 1
                        continue
                    if taken and item.kind is not ItemKind.THREAD:
                        index += 1
                        continue
                    del self._items[index]
                    self._busy[item.thread_id] = item
                    taken.append(item)
                    if item.kind is not ItemKind.THREAD:
                        break
                if taken:
                    return taken
                if self.spool is not None and not self._items:
                    if time.monotonic() >= self._next_rescan:
                        self._rescan()
                    if self._overflow:
                        self._refill()
                        if self._items:
                            continue
                    # Time is the event here: parked rows come due, a dead owner's rows are claimed.
                    self.cond.wait(max(0.0, self._next_rescan - time.monotonic()))
                else:
                    self.cond.wait()

    def settle(
        self,
        item: QueueItem,
        *,
        keep_in_spool: bool = False,
        park_until: float | None = None,
        account: Callable[[], None] | None = None,
    ) -> None:
        """The upload of `item` is over: remove its spool row, or keep it (parked for a slow retry).

        `account()` (counters, logs) runs after the spool is updated and before anyone waiting on the
        item (a flush) is woken, so whoever reads the counters after a flush sees them complete.
        """
        if item.seq is not None and self.spool is not None and not self.closed:
            if park_until is not None:
                self.spool.park(item.seq, park_until)
            elif not keep_in_spool:
                self.spool.remove(item.seq)
        if account is not None:
            account()
        with self.cond:
            if self._busy.get(item.thread_id) is item:
                del self._busy[item.thread_id]
            if item.seq is not None:
                self._loaded.discard(item.seq)
            # Wake whoever this may let move on: a flush, or a taker passed over an item of this thread (or
            # the spool's rows). Idle workers with nothing new to take stay asleep: waking each of them
            # after every upload costs more CPU than the upload itself.
            if self.watchers:
                self.cond.notify_all()
            elif item.thread_id in self._kept or self._overflow:
                self._kept.discard(item.thread_id)
                self.cond.notify()

    def settle_delivered(self, items: list[QueueItem]) -> None:
        """`settle` of delivered items, their spool rows removed already (`remove_rows`), under one lock."""
        if self.spool is not None and not self.closed and any(item.seq is not None for item in items):
            for item in items:  # rows left: each the long way
                self.settle(item)
            return
        with self.cond:
            wake = 0
            for item in items:
                if self._busy.get(item.thread_id) is item:
                    del self._busy[item.thread_id]
                if item.seq is not None:
                    self._loaded.discard(item.seq)
                if item.thread_id in self._kept or self._overflow:  # as `settle`: whoever this lets move on
                    self._kept.discard(item.thread_id)
                    wake += 1
            if self.watchers:
                self.cond.notify_all()
            elif wake:
                self.cond.notify(wake)

    def remove_rows(self, items: list[QueueItem], delivered: list[QueueItem] = ()) -> None:  # type: ignore[assignment]
        """Before settling a batch: the spool rows of these items (refused for good) and of `delivered` go in
        one transaction, the delivered ones' segment keys into the ledger; `settle` then has none left."""
        rows = [item for item in (*items, *delivered) if item.seq is not None]
        if not rows or self.spool is None or self.closed:
            return
        keys = [item.segment for item in delivered if item.seq is not None and item.kind is ItemKind.THREAD]
        self.spool.remove_all([item.seq for item in rows], keys)  # type: ignore[misc]
        with self.cond:
            for item in rows:
                self._loaded.discard(item.seq)  # type: ignore[arg-type]
                item.seq = None

    def mark_attempted(self, items: list[QueueItem]) -> None:
        """Before these items' uploads are written: their spool rows say they may be stored from now on."""
        if self.spool is None or self.closed:
            return
        self.spool.mark_attempted([item.seq for item in items if item.seq is not None and item.kind is ItemKind.THREAD])

    def _refill(self) -> None:
        """Load spool rows not in memory (replay at start, catch-up after an overflow); called under the lock."""
        assert self.spool is not None
        room = max(1, self.capacity - len(self._items))
        up_to = min(self._offering) if self._offering else None  # rows above: an offer's, not queued yet
        rows = self.spool.read_after(self._cursor, room, up_to)
        fresh = [
            QueueItem(tid, body, ItemKind(kind), seq, segment=segment, unconfirmed=bool(attempted))
            for seq, tid, kind, body, segment, attempted in rows
            if seq not in self._loaded
        ]
        if rows:
            self._cursor = rows[-1][0]
        self._enqueue(fresh)
        # Rows past `up_to` wait for the next refill, in order: the offer that wrote them finds the
        # overflow and leaves them on disk (queueing them itself could pass an older row of their thread).
        self._overflow = len(rows) >= room or up_to is not None

    def _rescan(self) -> None:
        """Now and then: claim the rows of dead owners and look again at parked rows whose time came."""
        assert self.spool is not None
        self._next_rescan = time.monotonic() + self.rescan_s
        self.spool.claim()
        self._cursor = 0
        self._overflow = True

    def unpark(self) -> None:
        """The API answers again: parked rows are offered at once (the next take loads them)."""
        if self.spool is None or self.closed:
            return
        self.spool.unpark()
        with self.cond:
            self._cursor = 0
            self._overflow = True
            self.cond.notify()

    def load_spool(self) -> int:
        """Replay at start: load what the spool holds (this process's claimed rows); how many were loaded."""
        if self.spool is None:
            return 0
        with self.cond:
            before = len(self._items)
            self._refill()
            return len(self._items) - before

    # -- state ----------------------------------------------------------------------------------------
    def pending(self) -> int:
        """Items not yet delivered: waiting in memory, in flight, or (with a spool) on disk."""
        if self.spool is not None:
            return self.spool.count()
        with self.cond:
            return len(self._items) + len(self._busy)

    def size(self) -> int:
        with self.cond:
            return len(self._items)

    def idle(self) -> bool:
        """Nothing waiting, in flight, or left on disk to load (parked rows excepted)."""
        with self.cond:
            return not (self._items or self._busy or self._overflow)

    def held_ids(self) -> set[str]:
        """Threads waiting in memory or in flight now (what a flush waits for)."""
        with self.cond:
            return {item.thread_id for item in self._items} | set(self._busy)

    def holds_any(self, thread_ids: Iterable[str]) -> bool:
        """Whether any of these threads still waits or is in flight (called under `cond`)."""
        wanted = thread_ids if isinstance(thread_ids, (set, frozenset)) else set(thread_ids)  # a flush's: no copy
        return bool(wanted & self._busy.keys()) or any(item.thread_id in wanted for item in self._items)

    def take_all(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """At shutdown: empty the queue; (waiting, in flight) items, which the caller settles or counts."""
        with self.cond:
            waiting, busy = list(self._items), list(self._busy.values())
            self._items.clear()
            self._busy.clear()
            self.closed = True
            self.cond.notify_all()
        return waiting, busy
