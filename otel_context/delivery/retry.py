"""The retry layer: when to retry an upload and how long to wait (backoff with jitter, `Retry-After` honoured)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from .item import QueueItem
from .outcome import SendOutcome, Verdict

MAX_RETRY_AFTER_S = 120.0


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5  # +/- this fraction of the delay, so many senders do not retry in lockstep

    def delay(self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based); never less than `Retry-After`."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        spread = base * self.jitter
        wait = base + (rng or random).uniform(-spread, spread)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, MAX_RETRY_AFTER_S))
        return max(0.0, wait)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_AGAIN = (Verdict.RETRY, Verdict.UNKNOWN)


class RetryingSender:
    """The retry layer: items tried together until each is delivered, refused for good, out of time, or
    told to stop.

    Permanent and transient failures are told apart once, here, by the sender's verdict. The items a
    try left to retry wait together and go again together (as the Collector's exporterhelper retries a
    batch). The wait between tries is interruptible: a shutdown ends it at once.
    """

    def __init__(
        self, send_batch: Callable[[list[QueueItem]], list[SendOutcome]], backoff: Backoff, max_elapsed_s: float
    ) -> None:
        self.send_batch = send_batch
        self.backoff = backoff
        self.max_elapsed_s = max_elapsed_s

    def deliver(
        self,
        items: list[QueueItem],
        wait: Callable[[float], bool],
        on_retry: Callable[[SendOutcome], None],
        deadline: Callable[[], float],
        settle: Callable[[list[tuple[QueueItem, SendOutcome]]], None],
    ) -> None:
        """`settle([(item, outcome), ...])` for the items of a try whose outcome is final, as soon as it is:
        DELIVERED, REJECTED, or RETRY / UNKNOWN when retrying stopped (time ran out). Each item is settled
        once. An UNKNOWN outcome marks its item `unconfirmed` (the read-back layer looks for it first).

        `wait(seconds)` sleeps and returns True when the wait was cut short by a shutdown; `deadline()`
        is the instant past which no new try starts (a shutdown moves it to now). The wait is the
        backoff's, and at least the longest `Retry-After` among the answers.
        """
        started = time.monotonic()
        attempt = 0
        pending = items
        while pending:
            attempt += 1
            again: list[tuple[QueueItem, SendOutcome]] = []
            final: list[tuple[QueueItem, SendOutcome]] = []
            for item, outcome in zip(pending, self.send_batch(pending), strict=True):
                if outcome.verdict is Verdict.UNKNOWN:
                    item.unconfirmed = True  # may be stored: read back before it is sent again
                (again if outcome.verdict in _AGAIN else final).append((item, outcome))
            if final:
                settle(final)
            if not again:
                return
            asked = [outcome.retry_after_s for _, outcome in again if outcome.retry_after_s is not None]
            delay = self.backoff.delay(attempt, max(asked) if asked else None)
            give_up_at = min(started + self.max_elapsed_s, deadline())
            stop = time.monotonic() + delay > give_up_at
            if not stop:
                for _, outcome in again:
                    on_retry(outcome)
                stop = wait(delay)
            if stop:
                settle(again)
                return
            pending = [item for item, _ in again]
