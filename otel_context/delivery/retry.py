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

# As the OTel Collector's exporter helper and azure-core: transient statuses worth another try.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
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


class RetryingSender:
    """The retry layer: one item, tried until delivered, refused for good, out of time, or told to stop.

    Permanent and transient failures are told apart once, here, by the sender's verdict. The wait
    between tries is interruptible: a shutdown ends it at once.
    """

    def __init__(self, send: Callable[[QueueItem], SendOutcome], backoff: Backoff, max_elapsed_s: float) -> None:
        self.send = send
        self.backoff = backoff
        self.max_elapsed_s = max_elapsed_s

    def deliver(
        self,
        item: QueueItem,
        wait: Callable[[float], bool],
        on_retry: Callable[[SendOutcome], None],
        deadline: Callable[[], float],
    ) -> SendOutcome:
        """The final outcome: DELIVERED, REJECTED, or RETRY when retrying stopped (time ran out).

        `wait(seconds)` sleeps and returns True when the wait was cut short by a shutdown;
        `deadline()` is the instant past which no new try starts (a shutdown moves it to now).
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            outcome = self.send(item)
            if outcome.verdict is not Verdict.RETRY:
                return outcome
            delay = self.backoff.delay(attempt, outcome.retry_after_s)
            give_up_at = min(started + self.max_elapsed_s, deadline())
            if time.monotonic() + delay > give_up_at:
                return outcome
            on_retry(outcome)
            if wait(delay):
                return outcome
