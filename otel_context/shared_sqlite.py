"""Opening a SQLite file that several processes may open at the same instant (spool, session book), and
the one way to write to it (`transaction`).

`PRAGMA journal_mode=WAL` on a new file needs an exclusive lock, and SQLite answers "database is
locked" at once, without waiting out the busy timeout, when another process holds it: two gunicorn
workers starting together failed that way. The pragma is retried until the timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .private_files import private_database

BUSY_TIMEOUT_S = 30.0


def connect_shared(path: str | Path, timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """An autocommit connection in WAL mode, usable from any thread (callers hold their own lock).

    The file and its directory are private to this user (`private_files`): `NotPrivate` otherwise.
    """
    db = sqlite3.connect(private_database(path), check_same_thread=False, isolation_level=None, timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                db.close()
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, synchronous: str | None = None) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error (the caller holds its own lock).

    `synchronous="NORMAL"` for this transaction only (a connection kept at FULL): its commit survives
    a killed process, not a power cut, and costs no fsync.
    """
    if synchronous is not None:
        db.execute(f"PRAGMA synchronous={synchronous}")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    finally:
        if synchronous is not None:
            db.execute("PRAGMA synchronous=FULL")
