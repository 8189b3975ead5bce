"""What one upload attempt came to: delivered, worth another try, or refused for good."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    verdict: Verdict
    status: int | None = None
    retry_after_s: float | None = None
    reason: str = ""
