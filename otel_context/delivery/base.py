"""`Delivery`: what the pipeline (and the helper process) asks of delivery, wherever the uploads run.

Two implementations: `DeliveryQueue` (workers in this process, `workers.py`) and `HelperDelivery` (a
helper process, `helper.py`, which itself runs a `DeliveryQueue` in the helper and falls back to one here).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..model import ConversationThread
from .item import QueueItem


class Delivery(Protocol):
    """Queue threads and ratings for upload, wait for them, stop; never waits on the network to queue."""

    @property
    def spooled(self) -> bool:
        """Whether what is queued is on disk (a spool is configured) rather than in memory."""
        ...

    def submit(self, threads: Iterable[ConversationThread], *, admitted: bool = False) -> int:
        """Queue threads; how many were accepted (the rest are counted as dropped). `admitted=True`: the
        caller pushed back before accepting the work, so it may pass the bound by one request's worth."""
        ...

    def submit_rating(self, thread_id: str, index: int, rating: int) -> None:
        """Queue a PATCH that sets `rating` on message `index` of a thread (after its pending upload)."""
        ...

    def offer(self, items: list[QueueItem], *, admitted: bool) -> int:
        """Queue items already encoded; how many were accepted."""
        ...

    def backlog_full(self, coming: int = 0) -> bool:
        """Whether new work should wait (the sidecar pushes back)."""
        ...

    def pending(self) -> int:
        """Threads not yet delivered."""
        ...

    def flush(self, timeout_s: float) -> bool:
        """Wait until what was queued so far is settled; False if time ran out."""
        ...

    def flush_until(self, deadline: float) -> bool:
        """`flush` with a monotonic deadline."""
        ...

    def shutdown(self, timeout_s: float) -> int:
        """Deliver what is queued within `timeout_s`, then stop; how many threads were left undelivered."""
        ...

    def reset_after_fork(self) -> None:
        """In a forked child: start empty; the parent's work stays the parent's."""
        ...
