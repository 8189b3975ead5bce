"""What the delivery queue carries: a thread upload or a rating update, as the bytes to send."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ..model import ConversationThread


class ItemKind(str, Enum):
    """What an item's body is sent as; the value is what the spool's `kind` column holds."""

    THREAD = "thread"  # POST a run's messages (appended to the thread)
    RATING = "rating"  # PATCH ratings onto a thread's messages


@dataclass(slots=True)
class QueueItem:
    thread_id: str
    body: bytes
    kind: ItemKind = ItemKind.THREAD
    seq: int | None = None  # row in the spool, when there is one
    abandoned: bool = False  # a shutdown gave up on it while in flight and counted it
    segment: str = ""  # the key its messages carry (`preparation/segments.py`): what a read-back looks for
    # An earlier try may have been stored (no answer, a timeout, a 502, a crash mid-upload): the thread is
    # read back before this item is sent again, and it is not sent if its segment is there.
    unconfirmed: bool = False


def encode_thread(thread: ConversationThread) -> bytes:
    """The request body of `POST /api/v1/log/conversation/thread`."""
    return _ENCODER.encode({"conversation": thread.to_wire()}).encode()


# `json.dumps` with these options builds an encoder per call: one, made once, writes the same bytes.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def thread_items(threads: Iterable[ConversationThread]) -> list[QueueItem]:
    """One upload (one append) per thread."""
    return [QueueItem(t.id, encode_thread(t), segment=t.segment) for t in threads]


def rating_item(thread_id: str, index: int, rating: int) -> QueueItem:
    """A PATCH that sets `rating` on message `index` of a thread."""
    body = json.dumps([{} for _ in range(index)] + [{"rating": rating}]).encode()
    return QueueItem(thread_id, body, ItemKind.RATING)
