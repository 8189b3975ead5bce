"""The SQLite session book: shared by every process of a host (the sidecar, or the exporter with a spool),
surviving restarts. A batch of turns is placed in one transaction (one commit: most of a turn's cost)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from ..shared_sqlite import connect_shared, transaction
from .sessions import (
    INHERITED_HANDLES,
    Placement,
    SessionStoreUnavailable,
    Turn,
    part_metadata,
    session_thread_id,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS session_parts (session TEXT PRIMARY KEY, part INTEGER NOT NULL, turns INTEGER NOT NULL,
    messages INTEGER NOT NULL, metadata TEXT NOT NULL, answer INTEGER NOT NULL, touched REAL NOT NULL);
CREATE TABLE IF NOT EXISTS session_turns (session TEXT NOT NULL, turn_id TEXT NOT NULL, part INTEGER NOT NULL,
    offset INTEGER NOT NULL, touched REAL NOT NULL, PRIMARY KEY (session, turn_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_turns_touched ON session_turns (touched);
"""
_KEEP_FACTOR = 10  # a session's part number outlives its turns: a session resumed after the TTL gets a new part


class SqliteSessions:
    """Sessions in SQLite: placed atomically across the processes that open the same file."""

    scope = ""  # shared by every process that opens the same file
    shared = True

    def __init__(self, path: str | Path, max_turns: int = 200, ttl_s: float = 86_400.0) -> None:
        self.path = str(path)
        self.max_turns, self.ttl_s = max_turns, ttl_s
        self._open()

    def _open(self) -> None:
        self._expired_at = 0.0
        self._lock = threading.Lock()
        self._db = connect_shared(self.path)
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; a power cut may lose a turn
        self._db.executescript(SCHEMA)

    def reset_after_fork(self) -> None:
        """A forked child opens its own connection (SQLite handles must not cross a fork)."""
        INHERITED_HANDLES.append(self._db)  # never closed here: closing could disturb the parent's locks
        self._open()

    def place_all(self, turns: list[Turn]) -> list[Placement]:
        if not turns:
            return []
        with self._lock:
            try:
                return self._place_all(turns)
            except sqlite3.Error as error:  # locked past the busy timeout, disk full, I/O: the turns wait
                raise SessionStoreUnavailable(f"session book {self.path} failed: {error}") from error

    def _place_all(self, turns: list[Turn]) -> list[Placement]:
        """All turns in one transaction; under `_lock`."""
        with transaction(self._db) as db:
            now = time.time()
            if now - self._expired_at > 60:  # forgetting idle sessions is a scan: once a minute is plenty
                db.execute("DELETE FROM session_turns WHERE touched < ?", (now - self.ttl_s,))
                db.execute("DELETE FROM session_parts WHERE touched < ?", (now - self.ttl_s * _KEEP_FACTOR,))
                self._expired_at = now
            return [self._place(turn, now) for turn in turns]

    def _place(self, turn: Turn, now: float) -> Placement:
        db = self._db
        row = db.execute(
            "SELECT part, turns, messages, metadata, answer, touched FROM session_parts WHERE session = ?",
            (turn.session,),
        ).fetchone()
        if row is not None:
            known = db.execute(
                "SELECT part, offset FROM session_turns WHERE session = ? AND turn_id = ?",
                (turn.session, turn.turn_id),
            ).fetchone()
            if known is not None:
                part, offset = known
                metadata = json.loads(row[3]) if part == row[0] else part_metadata(turn.metadata, part)
                return Placement(session_thread_id(turn.session, part), metadata, offset, repeat=True)
        if row is None:
            part, turns, messages, metadata, answer = 1, 0, 0, part_metadata(turn.metadata, 1), -1
        else:
            part, turns, messages, fixed, answer, touched = row
            metadata = json.loads(fixed)
            if turns >= self.max_turns or now - touched > self.ttl_s:  # full, or forgotten: a new part
                part, turns, messages, answer = part + 1, 0, 0, -1
                metadata = part_metadata(turn.metadata, part)
        offset = messages
        if turn.answer >= 0:
            answer = offset + turn.answer
        db.execute(
            "INSERT OR REPLACE INTO session_parts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (turn.session, part, turns + 1, messages + turn.messages, json.dumps(metadata), answer, now),
        )
        db.execute(
            "INSERT OR REPLACE INTO session_turns VALUES (?, ?, ?, ?, ?)",
            (turn.session, turn.turn_id, part, offset, now),
        )
        return Placement(session_thread_id(turn.session, part), metadata, offset)

    def latest_answer(self, session: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT part, answer FROM session_parts WHERE session = ?", (session,)).fetchone()
        if row is None or row[1] < 0:
            return None
        return session_thread_id(session, row[0]), row[1]

    def close(self) -> None:
        with self._lock:
            self._db.close()
