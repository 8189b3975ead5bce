"""A durable spool: threads are fsync'd to SQLite before they count as accepted, removed after a 2xx.

After a crash or restart the next process replays what is left, so nothing accepted is lost. Thread
ids are stable, so a thread that was delivered but not yet removed when the process died is sent
again and lands on the same Context thread: at least once on the wire, exactly once in Context.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

SPOOL_FILE = "otel-context-spool.db"


class Spool:
    """Bounded in bytes; `add` returns None for what did not fit, which the caller counts as dropped."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(directory) / SPOOL_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync at every commit: accepted means on disk
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " thread_id TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'thread', body BLOB NOT NULL)"
        )
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM items"
        ).fetchone()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def count(self) -> int:
        """Items stored (kept in memory: read by gauges, and still right after `close`)."""
        return self._count

    def add(self, items: Iterable[tuple[str, str, bytes]]) -> list[int | None]:
        """Store items in one transaction; each gets its sequence number, or None when the spool is full."""
        out: list[int | None] = []
        with self._lock:
            added = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for thread_id, kind, body in items:
                    if self._bytes + added + len(body) > self.max_bytes:
                        out.append(None)
                        continue
                    cursor = self._db.execute(
                        "INSERT INTO items (thread_id, kind, body) VALUES (?, ?, ?)", (thread_id, kind, body)
                    )
                    added += len(body)
                    out.append(cursor.lastrowid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += added
            self._count += sum(seq is not None for seq in out)
        return out

    def remove(self, seq: int) -> None:
        with self._lock:
            row = self._db.execute("DELETE FROM items WHERE seq = ? RETURNING LENGTH(body)", (seq,)).fetchone()
            if row is not None:
                self._bytes -= row[0]
                self._count -= 1

    def read_after(self, seq: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """Items in arrival order after `seq`: the replay at start and the refill after an overflow."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, thread_id, kind, body FROM items WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
