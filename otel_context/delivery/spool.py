"""The persistent queue's storage: threads fsync'd to SQLite before they count as accepted, removed after a 2xx.

Several processes may share one spool directory (gunicorn workers, a forked child, `serve --workers`):
each owns the rows it wrote, and the rows of a dead one are claimed by a live one (`owners.py`), so
nothing accepted waits for a restart of the very process that died, and no row is ever sent by two
live processes.

Context appends (a POST sent twice stores its messages twice), so the spool is a transactional outbox:
- a row is marked *attempted* before its upload is written (not fsync'd: it survives a killed process);
  a row loaded with the mark may have been stored, and is read back before it is sent
  (`QueueItem.unconfirmed`); a row never attempted is sent as it is;
- a delivered row is removed and its segment key written to the `delivered` ledger in one transaction;
- a row offered again (the sidecar's write-ahead log replays a trace whose run is spooled or delivered)
  is recognised by its segment key, in the rows or the ledger, and not stored twice (`KNOWN`).
The ledger keeps keys for `LEDGER_KEEP_S` and at most the newest `LEDGER_MAX_KEYS`, pruned as keys come:
a replay of the write-ahead log brings back runs of its records' lifetime (the trace buffer's max age,
600 s by default: the keys of 1,600 runs a second), a Collector's resend after a lost answer those of
its retry time (300 s by default); a sidecar that is down delivers nothing, so an outage ages no key out.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..owners import OwnerLock
from ..private_files import private_directory
from ..shared_sqlite import connect_shared, transaction

SPOOL_FILE = "otel-context-spool.db"
OWNERS_DIR = "owners"
LEDGER_KEEP_S = 7 * 86_400.0  # delivered segment keys, for replays of the write-ahead log (at the next start)
LEDGER_MAX_KEYS = 1_000_000  # and at most this many: about 145 MB on disk (the key, its time, and their index)
LEDGER_PRUNE_ROWS = 5_000  # keys deleted in one transaction at most: the spool's lock is held that long (~50 ms)
KNOWN = 0  # what `add` answers for a row it holds already or delivered (sequence numbers start at 1)
_SEQS_PER_QUERY = 500  # bound parameters per statement: well under SQLite's oldest limit (999)
_INHERITED: list[object] = []  # a forked child never closes its parent's handles: closing could disturb the parent


_KNOWN_SEGMENT = (
    "SELECT EXISTS (SELECT 1 FROM items WHERE segment = ?) OR EXISTS (SELECT 1 FROM delivered WHERE segment = ?)"
)


def backlog(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """Rows and bytes waiting in a spool directory, every owner's, read without taking part."""
    uri = (Path(directory) / SPOOL_FILE).resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM items").fetchone()
    return count, size


class Spool:
    """Bounded in bytes for the whole directory; `add` returns None for what did not fit (counted as dropped)."""

    def __init__(
        self, directory: str | os.PathLike[str], max_bytes: int, *, ledger_max_keys: int = LEDGER_MAX_KEYS
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        private_directory(self.directory)  # NotPrivate: not ours, or open to others
        self.max_bytes = max_bytes
        self.ledger_max_keys = ledger_max_keys
        # keys written between two prunings: a tenth of the bound, so the ledger passes it by a tenth at most
        self._prune_every = max(1, min(LEDGER_PRUNE_ROWS, ledger_max_keys // 10))
        self._ledger_added = 0
        self._open()

    def _open(self) -> None:
        self._lock = threading.Lock()
        self._owner = OwnerLock(self.directory / OWNERS_DIR)
        self.owner = self._owner.token
        self._db = connect_shared(self.path)
        self._db.execute("PRAGMA synchronous=FULL")  # fsync at every commit: accepted means on disk
        with transaction(self._db) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " thread_id TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'thread', body BLOB NOT NULL)"
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if "owner" not in columns:  # a spool written before owners existed: anyone may claim its rows
                db.execute("ALTER TABLE items ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
                db.execute("ALTER TABLE items ADD COLUMN parked_until REAL NOT NULL DEFAULT 0")
            if "segment" not in columns:  # written before appends: its rows may have been sent (attempted)
                db.execute("ALTER TABLE items ADD COLUMN segment TEXT NOT NULL DEFAULT ''")
                db.execute("ALTER TABLE items ADD COLUMN attempted INTEGER NOT NULL DEFAULT 1")
            db.execute("CREATE INDEX IF NOT EXISTS items_owner ON items (owner, seq)")
            db.execute("CREATE INDEX IF NOT EXISTS items_segment ON items (segment)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS delivered (segment TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID"
            )
            db.execute("CREATE INDEX IF NOT EXISTS delivered_at ON delivered (at)")
            self._prune_ledger(db, limit=None)
            db.execute("CREATE TABLE IF NOT EXISTS size (bytes INTEGER NOT NULL)")
            if db.execute("SELECT COUNT(*) FROM size").fetchone()[0] == 0:
                db.execute("INSERT INTO size SELECT COALESCE(SUM(LENGTH(body)), 0) FROM items")
        self._count = 0
        self._bytes = 0
        self.claim()

    def reopen_in_child(self) -> None:
        """After `fork()`: a new owner with its own connection; the parent's rows stay the parent's."""
        _INHERITED.extend((self._db, self._owner))  # neither closed nor used again in this process
        self._open()

    # -- the rows of dead owners -------------------------------------------------------------------
    def claim(self) -> int:
        """Take over the rows of owners that are gone (crashed or killed); returns how many were claimed."""
        claimed = self._owner.claim_dead(self._take_rows)
        return claimed + self._take_rows("")

    def _take_rows(self, owner: str) -> int:
        with self._lock, transaction(self._db) as db:
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM items WHERE owner = ?", (owner,)
            ).fetchone()
            if count:
                db.execute("UPDATE items SET owner = ?, parked_until = 0 WHERE owner = ?", (self.owner, owner))
        with self._lock:
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

    def add(self, items: Iterable[tuple[str, str, bytes, str]]) -> list[int | None]:
        """Store items (thread id, kind, body, segment key) in one transaction (one fsync); each gets its
        sequence number, None when full, or `KNOWN` when its segment is spooled or delivered already."""
        out: list[int | None] = []
        with self._lock:
            added = 0
            with transaction(self._db) as db:
                used = db.execute("SELECT bytes FROM size").fetchone()[0]
                for thread_id, kind, body, segment in items:
                    if segment and db.execute(_KNOWN_SEGMENT, (segment, segment)).fetchone()[0]:
                        out.append(KNOWN)
                        continue
                    if used + added + len(body) > self.max_bytes:
                        out.append(None)
                        continue
                    cursor = db.execute(
                        "INSERT INTO items (thread_id, kind, body, owner, segment, attempted)"
                        " VALUES (?, ?, ?, ?, ?, 0)",
                        (thread_id, kind, body, self.owner, segment),
                    )
                    added += len(body)
                    out.append(cursor.lastrowid)
                db.execute("UPDATE size SET bytes = bytes + ?", (added,))
            self._bytes += added
            self._count += sum(seq is not None and seq != KNOWN for seq in out)
        return out

    def mark_attempted(self, seqs: list[int]) -> None:
        """Before their uploads are written: these rows may be stored from now on (see the module docstring).
        Not fsync'd: WAL mode keeps the commit through a killed process (a power cut could lose it)."""
        if not seqs:
            return
        with self._lock, transaction(self._db, synchronous="NORMAL") as db:
            for start in range(0, len(seqs), _SEQS_PER_QUERY):
                chunk = seqs[start : start + _SEQS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                db.execute(f"UPDATE items SET attempted = 1 WHERE owner = ? AND seq IN ({marks})", (self.owner, *chunk))

    def remove(self, seq: int) -> None:
        """Delete a row refused for good (or delivered: `remove_all` with its segment)."""
        self.remove_all([seq])

    def remove_all(self, seqs: list[int], delivered: Iterable[str] = ()) -> None:
        """Delete rows in one transaction (a worker's batch: one commit, not one per row), and write the
        segment keys of the delivered ones to the ledger in the same transaction. Not fsync'd (as
        `mark_attempted`): a removal a power cut forgets is read back before it is sent again."""
        removed = freed = 0
        with self._lock:
            with transaction(self._db, synchronous="NORMAL") as db:
                now = time.time()
                keys = [(k, now) for k in delivered if k]
                db.executemany("INSERT OR REPLACE INTO delivered VALUES (?, ?)", keys)
                self._ledger_added += len(keys)
                if self._ledger_added >= self._prune_every:
                    self._ledger_added = 0
                    self._prune_ledger(db, limit=LEDGER_PRUNE_ROWS)
                for start in range(0, len(seqs), _SEQS_PER_QUERY):
                    chunk = seqs[start : start + _SEQS_PER_QUERY]
                    marks = ",".join("?" * len(chunk))
                    for (size,) in db.execute(
                        f"DELETE FROM items WHERE owner = ? AND seq IN ({marks}) RETURNING LENGTH(body)",
                        (self.owner, *chunk),
                    ).fetchall():
                        removed += 1
                        freed += size
                if removed:
                    db.execute("UPDATE size SET bytes = bytes - ?", (freed,))
            self._bytes -= freed
            self._count -= removed

    def _prune_ledger(self, db: sqlite3.Connection, limit: int | None) -> None:
        """In a transaction: delete the ledger's keys past `LEDGER_KEEP_S`, then the oldest past its bound;
        at most `limit` of each (None: all, at the start)."""
        most = -1 if limit is None else limit  # SQLite: a negative LIMIT is none
        db.execute(
            "DELETE FROM delivered WHERE segment IN (SELECT segment FROM delivered WHERE at < ? ORDER BY at LIMIT ?)",
            (time.time() - LEDGER_KEEP_S, most),
        )
        over = db.execute("SELECT COUNT(*) FROM delivered").fetchone()[0] - self.ledger_max_keys
        if over > 0:
            db.execute(
                "DELETE FROM delivered WHERE segment IN (SELECT segment FROM delivered ORDER BY at LIMIT ?)",
                (over if limit is None else min(over, limit),),
            )

    def park(self, seq: int, until: float) -> None:
        """Retries ran out: keep the row, and offer it again at wall-clock time `until` (a slow retry)."""
        with self._lock:
            self._db.execute("UPDATE items SET parked_until = ? WHERE seq = ? AND owner = ?", (until, seq, self.owner))

    def unpark(self) -> None:
        """Offer this owner's parked rows again now."""
        with self._lock:
            self._db.execute("UPDATE items SET parked_until = 0 WHERE owner = ? AND parked_until > 0", (self.owner,))

    def read_after(self, seq: int, limit: int, up_to: int | None = None) -> list[tuple[int, str, str, bytes, str, int]]:
        """This owner's rows after `seq` (and up to `up_to`) that are not parked, in arrival order (replay,
        refill, slow retry): sequence number, thread id, kind, body, segment key, and whether it was attempted."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, thread_id, kind, body, segment, attempted FROM items"
                " WHERE owner = ? AND seq > ? AND seq <= ? AND parked_until <= ?"
                " ORDER BY seq LIMIT ?",
                (self.owner, seq, (1 << 62) if up_to is None else up_to, time.time(), limit),
            ).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.release(keep_file=self._count > 0)
