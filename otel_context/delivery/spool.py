"""The persistent queue's storage: threads fsync'd to SQLite before they count as accepted, removed after a 2xx.

Several processes may share one spool directory (gunicorn workers, a forked child, `serve --workers`):
each process owns the rows it wrote, under a token whose lock file it holds with `flock` for as long
as it lives. A lock that can be taken belongs to a dead process (kill -9 included: the kernel drops
the lock), and its rows are claimed by whoever takes it, so nothing accepted waits for a restart of
the very process that died, and no row is ever sent by two live processes.

Thread ids are stable, so a thread delivered but not yet removed when its process died is sent again
and lands on the same Context thread: at least once on the wire, exactly once in Context.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..private_files import private_directory
from ..shared_sqlite import connect_shared

SPOOL_FILE = "otel-context-spool.db"
OWNERS_DIR = "owners"
_SEQS_PER_QUERY = 500  # bound parameters per statement: well under SQLite's oldest limit (999)
_INHERITED: list[object] = []  # a forked child never closes its parent's handles: closing could disturb the parent


def backlog(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """Rows and bytes waiting in a spool directory, every owner's, read without taking part."""
    uri = (Path(directory) / SPOOL_FILE).resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM items").fetchone()
    return count, size


class Spool:
    """Bounded in bytes for the whole directory; `add` returns None for what did not fit (counted as dropped)."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        private_directory(private_directory(self.directory) / OWNERS_DIR)  # NotPrivate: not ours, or open to others
        self.max_bytes = max_bytes
        self._open()

    def _open(self) -> None:
        self._lock = threading.Lock()
        self.owner = secrets.token_hex(8)
        self._lock_file = self.directory / OWNERS_DIR / f"{self.owner}.lock"
        self._lock_fd = os.open(self._lock_file, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held until this process ends, however it ends
        self._db = connect_shared(self.path)
        self._db.execute("PRAGMA synchronous=FULL")  # fsync at every commit: accepted means on disk
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " thread_id TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'thread', body BLOB NOT NULL)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
            if "owner" not in columns:  # a spool written before owners existed: anyone may claim its rows
                self._db.execute("ALTER TABLE items ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
                self._db.execute("ALTER TABLE items ADD COLUMN parked_until REAL NOT NULL DEFAULT 0")
            self._db.execute("CREATE INDEX IF NOT EXISTS items_owner ON items (owner, seq)")
            self._db.execute("CREATE TABLE IF NOT EXISTS size (bytes INTEGER NOT NULL)")
            if self._db.execute("SELECT COUNT(*) FROM size").fetchone()[0] == 0:
                self._db.execute("INSERT INTO size SELECT COALESCE(SUM(LENGTH(body)), 0) FROM items")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._count = 0
        self._bytes = 0
        self.claim()

    def reopen_in_child(self) -> None:
        """After `fork()`: a new owner with its own connection; the parent's rows stay the parent's."""
        _INHERITED.extend((self._db, self._lock_fd))  # neither closed nor used again in this process
        self._open()

    # -- the rows of dead owners -------------------------------------------------------------------
    def claim(self) -> int:
        """Take over the rows of owners that are gone (crashed or killed); returns how many were claimed."""
        claimed = 0
        for lock_file in (self.directory / OWNERS_DIR).glob("*.lock"):
            owner = lock_file.stem
            if owner == self.owner:
                continue
            try:
                fd = os.open(lock_file, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # alive: its owner holds the lock
                continue
            try:
                claimed += self._take_rows(owner)
                with contextlib.suppress(FileNotFoundError):
                    lock_file.unlink()
            finally:
                os.close(fd)
        return claimed + self._take_rows("")

    def _take_rows(self, owner: str) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count, size = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM items WHERE owner = ?", (owner,)
                ).fetchone()
                if count:
                    self._db.execute(
                        "UPDATE items SET owner = ?, parked_until = 0 WHERE owner = ?", (self.owner, owner)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count += count
            self._bytes += size
        return count

    # -- this owner's rows ---------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes held by every owner of this directory (the bound is shared)."""
        with self._lock:
            return self._db.execute("SELECT bytes FROM size").fetchone()[0]

    def count(self) -> int:
        """This owner's rows (kept in memory: read by gauges, and still right after `close`)."""
        return self._count

    def add(self, items: Iterable[tuple[str, str, bytes]]) -> list[int | None]:
        """Store items in one transaction (one fsync); each gets its sequence number, or None when full."""
        out: list[int | None] = []
        with self._lock:
            added = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                used = self._db.execute("SELECT bytes FROM size").fetchone()[0]
                for thread_id, kind, body in items:
                    if used + added + len(body) > self.max_bytes:
                        out.append(None)
                        continue
                    cursor = self._db.execute(
                        "INSERT INTO items (thread_id, kind, body, owner) VALUES (?, ?, ?, ?)",
                        (thread_id, kind, body, self.owner),
                    )
                    added += len(body)
                    out.append(cursor.lastrowid)
                self._db.execute("UPDATE size SET bytes = bytes + ?", (added,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += added
            self._count += sum(seq is not None for seq in out)
        return out

    def remove(self, seq: int) -> None:
        """Delete a delivered row. Not fsync'd: a removal a crash forgets means one idempotent resend."""
        self.remove_all([seq])

    def remove_all(self, seqs: list[int]) -> None:
        """Delete delivered rows in one transaction (a worker's batch: one commit, not one per row)."""
        removed = freed = 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(seqs), _SEQS_PER_QUERY):
                    chunk = seqs[start : start + _SEQS_PER_QUERY]
                    marks = ",".join("?" * len(chunk))
                    for (size,) in self._db.execute(
                        f"DELETE FROM items WHERE owner = ? AND seq IN ({marks}) RETURNING LENGTH(body)",
                        (self.owner, *chunk),
                    ).fetchall():
                        removed += 1
                        freed += size
                if removed:
                    self._db.execute("UPDATE size SET bytes = bytes - ?", (freed,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
            self._bytes -= freed
            self._count -= removed

    def park(self, seq: int, until: float) -> None:
        """Retries ran out: keep the row, and offer it again at wall-clock time `until` (a slow retry)."""
        with self._lock:
            self._db.execute("UPDATE items SET parked_until = ? WHERE seq = ? AND owner = ?", (until, seq, self.owner))

    def read_after(self, seq: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """This owner's rows after `seq` that are not parked, in arrival order (replay, refill, slow retry)."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, thread_id, kind, body FROM items WHERE owner = ? AND seq > ? AND parked_until <= ?"
                " ORDER BY seq LIMIT ?",
                (self.owner, seq, time.time(), limit),
            ).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        # The lock file stays while rows remain, so that another process (or the next start) claims them.
        if self._count == 0:
            with contextlib.suppress(FileNotFoundError):
                self._lock_file.unlink()
        os.close(self._lock_fd)
