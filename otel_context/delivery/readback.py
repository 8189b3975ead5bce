"""The read-back layer, below the retry layer (`layers.py` says why): an append is never sent twice blindly.

Context appends a thread POST's messages, and offers no idempotency key. So an upload whose earlier
try may have been stored (`QueueItem.unconfirmed`: no answer, a timeout, a reset after the write, a
500/502/504, or a spool row that was in flight when its process died) is looked for first: the thread
is read back (`GET /api/v1/conversations/{id}`) and the item is sent only if its segment key (written
by `preparation/segments.py`) is not among the stored messages (`segment_stored`). A thread that cannot
be read back keeps its item unconfirmed: it waits and is retried, never sent twice (`threads_unconfirmed` counts
those given up). `OTEL_EXPORTER_CONTEXT_AT_LEAST_ONCE=true` sends again without reading back.

Rating PATCHes set a value at an index: sending one twice is harmless, so they are never read back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..counters import Counters
from ..model import iso8601, parse_iso8601
from .item import ItemKind, QueueItem
from .layers import Layer
from .outcome import SendOutcome, Verdict


class ReadBackSender:
    """`send_batch` that reads back the unconfirmed items first, then sends the rest through the layer below;
    each item's `unconfirmed` is kept true while its fate is unknown (the retry layer sets it on an UNKNOWN
    outcome)."""

    def __init__(
        self,
        below: Layer,
        stored_messages: Callable[[str], list[dict[str, Any]] | SendOutcome | None],
        counters: Counters,
        *,
        at_least_once: bool = False,
        before_send: Callable[[list[QueueItem]], None] = lambda items: None,
    ) -> None:
        """`before_send(items)` runs before the items' requests are written (the spool marks them attempted)."""
        self._below = below
        self._stored_messages = stored_messages
        self._counters = counters
        self._at_least_once = at_least_once
        self._before_send = before_send

    def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]:
        outcomes: list[SendOutcome | None] = [None] * len(items)
        ready: list[int] = []
        for index, item in enumerate(items):
            if item.unconfirmed and item.kind is ItemKind.THREAD and not self._at_least_once:
                known = self._look_up(item)
                if known is not None:
                    outcomes[index] = known
                    continue
            item.unconfirmed = False  # read back and absent, or safe to send again
            ready.append(index)
        if ready:
            batch = [items[index] for index in ready]
            self._before_send(batch)
            for index, outcome in zip(ready, self._below.send_batch(batch), strict=True):
                outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def _look_up(self, item: QueueItem) -> SendOutcome | None:
        """DELIVERED when the item's segment is stored; UNKNOWN when the thread cannot be read; None: absent."""
        self._counters.add("readbacks")
        stored = self._stored_messages(item.thread_id)
        if isinstance(stored, SendOutcome):
            return SendOutcome(
                Verdict.UNKNOWN, stored.status, stored.retry_after_s, f"cannot read the thread back: {stored.reason}"
            )
        if stored and segment_stored(stored, _messages(item.body), item.segment):
            self._counters.add("readbacks_found")
            return SendOutcome(Verdict.DELIVERED, 200, reason="found stored by an earlier try")
        return None


def _messages(body: bytes) -> list[dict[str, Any]]:
    """The messages an item's body appends (for an API that keeps no message metadata)."""
    try:
        return list(json.loads(body)["conversation"]["messages"])
    except (ValueError, KeyError, TypeError):
        return []


def segment_stored(stored: list[dict[str, Any]], body_messages: list[dict[str, Any]], key: str) -> bool:
    """Whether a segment is among a thread's stored messages: by its key in their metadata, or (an API
    that keeps no message metadata) by its first message's role, text and timestamp."""
    trace, _, span = key.partition("/")
    if not stored:
        return False
    if any(
        (m.get("metadata") or {}).get("trace_id") == trace and (m.get("metadata") or {}).get("span_id") == span
        for m in stored
    ):
        return True
    if any(m.get("metadata") for m in stored) or not body_messages:
        return False  # the API keeps message metadata, and none has the key
    first = body_messages[0]
    wanted = (first.get("role"), first.get("message"), _instant(first.get("event_timestamp")))
    return any((m.get("role"), m.get("message"), _instant(m.get("event_timestamp"))) == wanted for m in stored)


def _instant(stamp: Any) -> str | None:
    """A timestamp in one spelling (an API may answer `+00:00` for `Z`, or more digits)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return iso8601(parse_iso8601(stamp))
    except ValueError:
        return stamp
