"""Faults the local API can inject into its `/api/v1` answers, so delivery can be tested against a bad day.

Deadlines are `time.monotonic()` values: a fault set "for 10 s" ends on its own, even if the test that set it
fails before clearing it. The plan is shared between the test thread and the server loop, so every read and
write goes through one lock.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

ADMIN_KEYS = (
    "latency_s",
    "status",
    "duration_s",
    "retry_after",
    "reset_s",
    "down_s",
    "lose_ack_s",
    "stored_status",
    "stored_latency_s",
)
RETRY_AFTER_STATUSES = (429, 503)


class FaultSpecError(ValueError):
    """An admin fault request that cannot be applied; the message names the key."""


@dataclass
class FaultPlan:
    """What the server does wrong right now; all fields empty means it behaves."""

    latency_s: float = 0.0
    status: int | None = None
    status_until: float | None = None  # None with a status: fail until cleared
    retry_after: float | None = None
    reset_connections_until: float | None = None
    down_until: float | None = None
    lose_ack_until: float | None = None  # store the write, then reset: the client never learns it worked
    # Store the write, then answer this status (a gateway's 502/504 after its upstream stored it), while
    # `duration_s` lasts (None: until cleared).
    stored_status: int | None = None
    stored_status_until: float | None = None
    stored_latency_s: float = 0.0  # store the write, then wait before answering (past a client's timeout)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], now: float | None = None) -> FaultPlan:
        """Build a plan from the admin JSON (durations relative to `now`); `{}` is a healthy server."""
        unknown = sorted(set(spec) - set(ADMIN_KEYS))
        if unknown:
            raise FaultSpecError(f"unknown fault key(s) {', '.join(unknown)}; expected some of {', '.join(ADMIN_KEYS)}")
        now = time.monotonic() if now is None else now
        status = _status(spec.get("status"))
        duration = _seconds(spec, "duration_s")
        return cls(
            latency_s=_seconds(spec, "latency_s") or 0.0,
            status=status,
            status_until=now + duration if status is not None and duration is not None else None,
            retry_after=_seconds(spec, "retry_after"),
            reset_connections_until=_deadline(now, _seconds(spec, "reset_s")),
            down_until=_deadline(now, _seconds(spec, "down_s")),
            lose_ack_until=_deadline(now, _seconds(spec, "lose_ack_s")),
            stored_status=_status(spec.get("stored_status")),
            stored_status_until=_deadline(now, duration) if spec.get("stored_status") is not None else None,
            stored_latency_s=_seconds(spec, "stored_latency_s") or 0.0,
        )

    def assign(self, other: FaultPlan) -> None:
        """Take over another plan's faults in place, so the running server sees them at once."""
        with self._lock:
            for f in fields(self):
                if f.name != "_lock":
                    setattr(self, f.name, getattr(other, f.name))

    def clear(self) -> None:
        self.assign(FaultPlan())

    def snapshot(self) -> FaultPlan:
        """A consistent copy for one request to act on."""
        with self._lock:
            return FaultPlan(**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"})

    def is_down(self, now: float) -> bool:
        return self.down_until is not None and now < self.down_until

    def resets(self, now: float) -> bool:
        return self.is_down(now) or (self.reset_connections_until is not None and now < self.reset_connections_until)

    def loses_ack(self, now: float) -> bool:
        return self.lose_ack_until is not None and now < self.lose_ack_until

    def failure_status(self, now: float) -> int | None:
        """The status to answer writes with, while the window lasts."""
        if self.status is None or (self.status_until is not None and now >= self.status_until):
            return None
        return self.status

    def status_after_store(self, now: float) -> int | None:
        """The status to answer a write with once it is stored, while the window lasts."""
        if self.stored_status is None or (self.stored_status_until is not None and now >= self.stored_status_until):
            return None
        return self.stored_status

    def retry_after_header(self, status: int) -> str | None:
        if self.retry_after is None or status not in RETRY_AFTER_STATUSES:
            return None
        return str(int(self.retry_after)) if float(self.retry_after).is_integer() else f"{self.retry_after:g}"

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """The plan as JSON, deadlines shown as seconds left (None: no deadline or not active)."""
        plan = self.snapshot()
        now = time.monotonic() if now is None else now
        return {
            "latency_s": plan.latency_s,
            "status": plan.failure_status(now),
            "status_remaining_s": _remaining(plan.status_until, now) if plan.failure_status(now) else None,
            "retry_after": plan.retry_after,
            "reset_remaining_s": _remaining(plan.reset_connections_until, now),
            "down_remaining_s": _remaining(plan.down_until, now),
            "lose_ack_remaining_s": _remaining(plan.lose_ack_until, now),
            "stored_status": plan.status_after_store(now),
            "stored_latency_s": plan.stored_latency_s,
        }


def _seconds(spec: dict[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise FaultSpecError(f"{key}: must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _status(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise FaultSpecError(f"status: must be an HTTP error status between 400 and 599, got {value!r}")
    return value


def _deadline(now: float, seconds: float | None) -> float | None:
    return None if seconds is None else now + seconds


def _remaining(deadline: float | None, now: float) -> float | None:
    if deadline is None or deadline <= now:
        return None
    return round(deadline - now, 3)
