"""What the delivery queue carries: a thread upload or a rating update, as the bytes to send."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ..model import ConversationThread


class ItemKind(str, Enum):
    """What an item's body is sent as; the value is what the spool's `kind` column holds."""

    THREAD = "thread"  # POST the whole thread
    RATING = "rating"  # PATCH ratings onto a thread's messages


@dataclass(slots=True)
class QueueItem:
    thread_id: str
    body: bytes
    kind: ItemKind = ItemKind.THREAD
    seq: int | None = None  # row in the spool, when there is one
    abandoned: bool = False  # a shutdown gave up on it while in flight and counted it
    # The version of the shared session book this body was built from: while the book still says so, the
    # body is its thread as it stands. NOT_IN_BOOK: no session thread; None: unknown (ask the book).
    book_version: int | None = None


NOT_IN_BOOK = 0  # a `book_version` no session part has (versions count from 1)


def encode_thread(thread: ConversationThread) -> bytes:
    """The request body of `POST /api/v1/log/conversation/thread`."""
    return _ENCODER.encode({"conversation": thread.to_wire()}).encode()


# `json.dumps` with these options builds an encoder per call: one, made once, writes the same bytes.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def thread_items(
    threads: Iterable[ConversationThread], book_versions: Iterable[int | None] | None = None
) -> list[QueueItem]:
    """One upload per thread; `book_versions`, when given, one per thread (see `QueueItem.book_version`)."""
    if book_versions is None:
        return [QueueItem(t.id, encode_thread(t)) for t in threads]
    return [
        QueueItem(t.id, encode_thread(t), book_version=version)
        for t, version in zip(threads, book_versions, strict=True)
    ]


def rating_item(thread_id: str, index: int, rating: int) -> QueueItem:
    """A PATCH that sets `rating` on message `index` of a thread."""
    body = json.dumps([{} for _ in range(index)] + [{"rating": rating}]).encode()
    return QueueItem(thread_id, body, ItemKind.RATING)
