"""Which threads are sent: include/exclude workflows by name, and sample by ratio.

Patterns are shell-style (`fnmatch`) and match a chain's workflow name, or a lone model call's span
name. Sampling is decided by a hash of the session id (so a session is kept or dropped whole) or of
the trace id, so every process of a distributed app makes the same choice. What is not sent is
counted (`threads_filtered`, `threads_sampled_out`), never silently lost.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass

from ..model import ConversationThread


@dataclass(frozen=True)
class ThreadSelection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"sample ratio must be between 0 and 1, got {self.sample_ratio}")

    def verdict(self, thread: ConversationThread, name: str) -> str | None:
        """None to send the thread, else the counter that explains why not."""
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return "threads_filtered"
        if any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
            return "threads_filtered"
        if self.sample_ratio < 1.0:
            key = thread.metadata.get("session_id") or thread.trace_id or thread.id
            bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
            if bucket >= self.sample_ratio:
                return "threads_sampled_out"
        return None
