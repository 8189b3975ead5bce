"""The one interface of the layers under the sending queue, as the Collector exporterhelper's `sender.go`.

    queue (`queue.py`) -> retry (`retry.py`) -> read-back (`readback.py`) -> timeout (`timeout.py`)
        -> send (`sender.py`)

Each layer takes a batch of items and answers one `SendOutcome` per item, in order, by calling the
layer below; each holds its own settings (`Backoff` and the elapsed bound; at-least-once; the shutdown
deadline; the connection). The retry layer is the one exception in shape: it settles items as their
outcomes become final instead of answering them (see `RetryingSender.deliver`).

Read-back is below retry, not above it: it must run before every resend of an item whose earlier try
may have been stored, and the retry layer is what resends. Above retry it would run once per batch
taken from the queue, and the second try after an unanswered POST would append blindly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .item import QueueItem
from .outcome import SendOutcome

SendBatch = Callable[[list[QueueItem]], list[SendOutcome]]  # a layer's `send_batch`, as the layer above sees it


class Layer(Protocol):
    """One try of each item, an outcome each, in order; never raises."""

    def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]: ...


class Sender(Layer, Protocol):
    """The bottom of the stack (`ContextSender`): it also reads a thread back, and cuts tries short."""

    def stored_messages(self, thread_id: str) -> list[dict[str, Any]] | SendOutcome | None: ...

    def abort(self) -> None: ...
