"""The SQLite session book: shared by every process of a host (the sidecar, or the exporter with a spool),
versioned per session part, surviving restarts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ..model import ConversationThread
from ..shared_sqlite import connect_shared
from .sessions import INHERITED_HANDLES, SessionBook, Turn, merge, session_thread_id

_IDS_PER_QUERY = 500  # bound parameters per query: well under SQLite's oldest limit (999)


class SqliteSessions(SessionBook):
    """Sessions in SQLite (the sidecar, or the exporter with a spool): they survive restarts."""

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
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last turn costs less than an fsync per turn
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS turns (session TEXT NOT NULL, part INTEGER NOT NULL, turn_id TEXT NOT NULL,"
            " start_ns INTEGER NOT NULL, payload TEXT NOT NULL, touched REAL NOT NULL,"
            " PRIMARY KEY (session, turn_id))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS parts (thread_id TEXT PRIMARY KEY, session TEXT NOT NULL,"
            " part INTEGER NOT NULL, version INTEGER NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS parts_session ON parts (session, part)")

    def reset_after_fork(self) -> None:
        """A forked child opens its own connection (SQLite handles must not cross a fork)."""
        INHERITED_HANDLES.append(self._db)  # never closed here: closing could disturb the parent's locks
        self._open()

    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        ((part, _version, turns),) = self._add_all([(session, turn)])
        return part, turns

    def fold_all(self, turns: list[tuple[str, Turn]]) -> list[tuple[ConversationThread, int | None]]:
        return [
            (merge(session, part, held), version)
            for (session, _), (part, version, held) in zip(turns, self._add_all(turns), strict=True)
        ]

    def _add_all(self, turns: list[tuple[str, Turn]]) -> list[tuple[int, int, list[Turn]]]:
        """Every turn in one transaction (one commit: most of a turn's cost); each turn's part, the part's
        version and its turns as of that version (read in the same transaction, so the three agree).

        Should a turn fail, the transaction is rolled back and the turns are added one transaction each,
        as one at a time would have: those before the failing one stay in the book.
        """
        payloads = [json.dumps({"messages": turn.messages, "metadata": turn.metadata}) for _, turn in turns]
        with self._lock:
            try:
                return self._transaction(turns, payloads)
            except Exception:
                if len(turns) == 1:
                    raise
            added = []
            for one, payload in zip(turns, payloads, strict=True):
                added += self._transaction([one], [payload])
            return added

    def _transaction(self, turns: list[tuple[str, Turn]], payloads: list[str]) -> list[tuple[int, int, list[Turn]]]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            added = [
                self._add_one(session, turn, payload) for (session, turn), payload in zip(turns, payloads, strict=True)
            ]
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added

    def _add_one(self, session: str, turn: Turn, payload: str) -> tuple[int, int, list[Turn]]:
        """Store a turn and raise its part's version, inside a transaction; the part, version and turns."""
        db = self._db
        now = time.time()
        if now - self._expired_at > 60:  # forgetting idle sessions is a scan: once a minute is plenty
            db.execute("DELETE FROM turns WHERE touched < ?", (now - self.ttl_s,))
            self._expired_at = now
        known, latest, held, written, anywhere = db.execute(_PLACE, (session, turn.turn_id)).fetchone()
        part = known or latest
        alone = False  # whether the part holds no other turn (its turns need not be read back)
        if known is None:
            forgotten = held == 0 and written  # idle past the TTL: never overwrite it
            if held >= self.max_turns or forgotten:
                part += 1
            alone = held == 0 or part != latest
        db.execute(
            "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?)",
            (session, part, turn.turn_id, turn.start_ns, payload, now),
        )
        if anywhere:  # the session's other turns are touched too: they expire together
            db.execute("UPDATE turns SET touched = ? WHERE session = ?", (now, session))
        ((version,),) = db.execute(
            "INSERT INTO parts VALUES (?, ?, ?, 1) ON CONFLICT (thread_id) DO UPDATE SET version = version + 1"
            " RETURNING version",
            (session_thread_id(session, part, ""), session, part),
        ).fetchall()
        return part, version, [_turn(turn.turn_id, turn.start_ns, payload)] if alone else self._turns(session, part)

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        with self._lock:
            part = self._latest_part(session)
            return part, self._turns(session, part)

    def version(self, thread_id: str) -> int | None:
        """How many times the session part behind `thread_id` changed; None if it is no session thread."""
        with self._lock:
            row = self._db.execute("SELECT version FROM parts WHERE thread_id = ?", (thread_id,)).fetchone()
        return row[0] if row else None

    def versions(self, thread_ids: list[str]) -> dict[str, int]:
        """Every id's version in one query per `_IDS_PER_QUERY` (a batch of uploads asks once)."""
        found: dict[str, int] = {}
        with self._lock:
            for start in range(0, len(thread_ids), _IDS_PER_QUERY):
                chunk = thread_ids[start : start + _IDS_PER_QUERY]
                query = f"SELECT thread_id, version FROM parts WHERE thread_id IN ({','.join('?' * len(chunk))})"
                found.update(self._db.execute(query, chunk))
        return found

    def current(self, thread_id: str) -> tuple[int, ConversationThread] | None:
        """The version and the whole thread of a session part as the book holds it now, for an upload."""
        with self._lock:
            row = self._db.execute(
                "SELECT session, part, version FROM parts WHERE thread_id = ?", (thread_id,)
            ).fetchone()
            if row is None:
                return None
            session, part, version = row
            turns = self._turns(session, part)
        return (version, merge(session, part, turns)) if turns else None

    def _latest_part(self, session: str) -> int:
        """The highest part of a session, in the book's rows or among its written threads (1 if none)."""
        row = self._db.execute(
            "SELECT MAX(p) FROM (SELECT MAX(part) AS p FROM parts WHERE session = ?"
            " UNION ALL SELECT MAX(part) FROM turns WHERE session = ?)",
            (session, session),
        ).fetchone()
        return row[0] or 1

    def _turns(self, session: str, part: int) -> list[Turn]:
        rows = self._db.execute(
            "SELECT turn_id, start_ns, payload FROM turns WHERE session = ? AND part = ?", (session, part)
        ).fetchall()
        return [_turn(turn_id, start_ns, payload) for turn_id, start_ns, payload in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _turn(turn_id: str, start_ns: int, payload: str) -> Turn:
    """A turn as the SQLite book stores it."""
    data = json.loads(payload)
    return Turn(turn_id, start_ns, data["messages"], data["metadata"])


# A turn's place, in one statement: the part of the turn if the book has it already (else None), the
# session's latest part among its rows and written threads (1 if none), that part's turns held now and
# whether its thread was ever written (it exists in Context), and whether the session has any turn.
_PLACE = (
    "SELECT known, latest,"
    " (SELECT COUNT(*) FROM turns WHERE session = ?1 AND part = latest),"
    " EXISTS (SELECT 1 FROM parts WHERE session = ?1 AND part = latest),"
    " EXISTS (SELECT 1 FROM turns WHERE session = ?1)"
    " FROM (SELECT (SELECT part FROM turns WHERE session = ?1 AND turn_id = ?2) AS known,"
    " COALESCE((SELECT MAX(p) FROM (SELECT MAX(part) AS p FROM parts WHERE session = ?1"
    " UNION ALL SELECT MAX(part) FROM turns WHERE session = ?1)), 1) AS latest)"
)
