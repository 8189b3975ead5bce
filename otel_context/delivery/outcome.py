"""What one upload attempt came to: delivered, worth another try, refused for good, or not known.

Context appends a thread POST's messages (see `../local_api/store.py`), so a POST is not idempotent:
an attempt whose request may have reached the API and whose answer does not prove it stored nothing
is UNKNOWN, and is read back before it is ever sent again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # proved not stored (nothing written, 408, 429, 503): safe to send again
    REJECTED = "rejected"  # refused for good (400, 401, 413, ...): never sent again
    UNKNOWN = "unknown"  # may be stored (no answer, a timeout or reset after the write, 500, 502, 504)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    verdict: Verdict
    status: int | None = None
    retry_after_s: float | None = None
    reason: str = ""
