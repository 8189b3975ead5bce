"""The sidecar's write-ahead log: an OTLP request is on disk before it is acknowledged.

Modelled on the Collector's persistent sending queue (`exporterhelper/internal/queue/persistent_queue.go`):
the receiver answers only after the write. Writes are group-committed: one writer thread commits every
append waiting at that moment in one SQLite transaction, so many concurrent requests share one fsync
while each awaits its own future. Each record lists the traces it holds spans of (its *pins*); a pin is
released when its trace is finished, and a record without pins is deleted in the same transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..owners import OwnerLock
from ..shared_sqlite import connect_shared, transaction

WAL_FILE = "otel-context-receiver-wal.db"
OWNERS_DIR = "wal-owners"
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (seq INTEGER NOT NULL, trace BLOB NOT NULL, PRIMARY KEY (seq, trace)) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Append:
    body: bytes
    traces: Collection[int]
    done: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True, slots=True)
class _Release:
    pins: list[tuple[int, int]]  # (seq, trace)
    requests: list[int]


class WalUnavailable(Exception):
    """The log could not store a request (disk full, I/O error, closed): the request must be refused."""


def _trace_key(trace_id: int) -> bytes:
    return trace_id.to_bytes(16, "big")


class WriteAheadLog:
    """Requests fsync'd before their answer, kept until every trace they pin is released.

    The workers of `serve --workers` share the file; each owns the records it wrote (`owners.py`), and
    replays at start only its own and those of workers that died: a restarted worker never replays a
    live worker's records (their traces are that worker's to finish).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / WAL_FILE
        self._db = connect_shared(self.path)  # `serve --workers` open it together; makes the directory 0700
        self._db.execute("PRAGMA synchronous=FULL")  # fsync at every commit: acknowledged means on disk
        self._sync = "FULL"
        self._db.executescript(SCHEMA)
        if "owner" not in {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}:
            self._db.execute("ALTER TABLE requests ADD COLUMN owner TEXT NOT NULL DEFAULT ''")  # an older log
        self._owner = OwnerLock(Path(directory) / OWNERS_DIR)
        self._db_lock = threading.Lock()  # the writer's transactions vs. reads
        self._ops: list[_Append | _Release] = []
        self._cond = threading.Condition()
        self._closing = False
        self.commits = 0  # transactions committed: fewer than appends when group commit works
        self._writer = threading.Thread(target=self._write, name="otel-context-wal", daemon=True)
        self._writer.start()

    async def append(self, body: bytes, traces: Collection[int]) -> int:
        """Store a request that holds spans of `traces`; returns its sequence number once it is on disk."""
        op = _Append(body, traces)
        self._push(op)
        return await asyncio.wrap_future(op.done)

    def release(self, pins: Iterable[tuple[int, int]], requests: Iterable[int]) -> None:
        """Forget finished `(seq, trace)` pins and delete `requests` (queued; a lost release only means a replay)."""
        op = _Release(list(pins), list(requests))
        if op.pins or op.requests:
            self._push(op)

    def records(self) -> list[tuple[int, bytes, set[int]]]:
        """This process's stored requests (its own, and those it claimed from dead owners) in arrival order,
        with the traces still pinned: the replay at start."""
        self._owner.claim_dead(self._take)
        self._take("")  # written before owners existed
        with self._db_lock:
            pins: dict[int, set[int]] = {}
            query = "SELECT p.seq, p.trace FROM pins p JOIN requests r ON r.seq = p.seq WHERE r.owner = ?"
            for seq, trace in self._db.execute(query, (self._owner.token,)):
                pins.setdefault(seq, set()).add(int.from_bytes(trace, "big"))
            rows = self._db.execute(
                "SELECT seq, body FROM requests WHERE owner = ? ORDER BY seq", (self._owner.token,)
            ).fetchall()
        return [(seq, body, pins.get(seq, set())) for seq, body in rows]

    def _take(self, owner: str) -> int:
        """Make `owner`'s records this process's (a dead worker's, claimed)."""
        with self._db_lock:
            return self._db.execute(
                "UPDATE requests SET owner = ? WHERE owner = ?", (self._owner.token, owner)
            ).rowcount

    def count(self) -> int:
        with self._db_lock:
            return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the file."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._writer.join()
        left = self._db.execute("SELECT COUNT(*) FROM requests WHERE owner = ?", (self._owner.token,)).fetchone()[0]
        self._db.close()
        self._owner.release(keep_file=left > 0)

    def _push(self, op: _Append | _Release) -> None:
        with self._cond:
            if self._closing:
                raise WalUnavailable("the write-ahead log is closed")
            self._ops.append(op)
            self._cond.notify()

    def _write(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._ops or self._closing)
                batch, self._ops = self._ops, []
            if not batch:
                return
            # a request whose client went away (its future cancelled) is not written at all
            batch = [op for op in batch if not isinstance(op, _Append) or op.done.set_running_or_notify_cancel()]
            with self._db_lock:
                appended = self._commit(batch)
            for op, outcome in appended:
                if isinstance(outcome, BaseException):
                    op.done.set_exception(outcome)
                else:
                    op.done.set_result(outcome)

    def _commit(self, batch: list[_Append | _Release]) -> list[tuple[_Append, int | BaseException]]:
        """One transaction, one fsync, for every operation in the batch."""
        appended: list[tuple[_Append, int | BaseException]] = []
        db = self._db
        try:
            # Only appends need their fsync before the answer; a release lost in a crash only means a
            # replay, so a batch of releases alone is committed without waiting for the disk. The setting
            # is sticky (set only when it changes: one writer, runs of appends), so it is set here and not
            # by `transaction(synchronous=...)`, which restores FULL after every transaction.
            sync = "FULL" if any(isinstance(op, _Append) for op in batch) else "NORMAL"
            if sync != self._sync:
                db.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            with transaction(db):
                for op in batch:
                    if isinstance(op, _Append):
                        seq = db.execute(
                            "INSERT INTO requests (body, owner) VALUES (?, ?)", (op.body, self._owner.token)
                        ).lastrowid
                        assert seq is not None
                        db.executemany("INSERT INTO pins VALUES (?, ?)", [(seq, _trace_key(t)) for t in op.traces])
                        appended.append((op, seq))
                    else:
                        db.executemany("DELETE FROM pins WHERE seq = ? AND trace = ?", _pin_keys(op.pins))
                        db.executemany("DELETE FROM requests WHERE seq = ?", [(seq,) for seq in op.requests])
            self.commits += 1
        except Exception as error:  # disk full, I/O error: every request of the batch is refused (503)
            failure = WalUnavailable(str(error))
            return [(op, failure) for op in batch if isinstance(op, _Append)]
        return appended


def _pin_keys(pins: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
    return [(seq, _trace_key(trace)) for seq, trace in pins]
