"""The timeout layer: how long a try may take, and the instant past which none starts.

Each request is bounded by the transport's `timeout_s` (`OTEL_EXPORTER_CONTEXT_TIMEOUT`, applied per
connection by `sender.py`). A shutdown adds a deadline: the retry layer starts no try past it and ends
its backoff there, and `cut_short()` ends the tries in flight (their sockets are shut down, the rest of
their batches is not sent: RETRY, nothing written).
"""

from __future__ import annotations

from .item import QueueItem
from .layers import Sender
from .outcome import SendOutcome


class TimeoutLayer:
    """`send_batch` through to the sender, under a deadline a shutdown sets (`deadline`, a monotonic instant)."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self.deadline = float("inf")  # read and set under the sending queue's lock (workers wait on it)

    def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]:
        return self._sender.send_batch(items)

    def cut_short(self) -> None:
        """Past the deadline: the tries in flight end now."""
        self._sender.abort()
