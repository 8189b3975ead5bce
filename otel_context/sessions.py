"""Conversations, not loose calls: every turn of a session goes into one Context thread, in order.

A turn is the thread one root made. When it carries a session id (`session_id`, `thread_id` or
`conversation_id` metadata, from association properties, OpenInference `session.id`, or GenAI
`gen_ai.conversation.id`), the book keeps the session's turns and the whole session thread is sent
again with a stable id: Context updates it in place. Turns are ordered by start time, so a turn
converted late still lands in its place. A session longer than `max_turns` continues in a new
thread (`part` 2, 3, ...) rather than dropping old turns; so does a session forgotten by a bounded
in-memory book, so an upload never overwrites a thread with fewer turns than it had.

Which process may write a session's thread:
- the in-memory book (the default) knows only this process's turns, so its threads are scoped to the
  process: a restarted process or a second worker continues the session in a thread of its own
  (turns split over several threads, none overwritten);
- the SQLite book (`OTEL_EXPORTER_CONTEXT_SESSION_DB`, or beside the spool) is shared by every
  process of the host: one thread per session, with a version that rises with each turn. An upload
  is rebuilt from the book just before it is sent, and sent again if the version moved while it was
  on the wire, so the last write to reach Context always holds every turn.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .convert import THREAD_NAMESPACE
from .model import ConversationThread, Message

SESSION_KEYS = ("session_id", "thread_id", "conversation_id")
_INHERITED: list[object] = []  # handles a forked child keeps but never uses
SUMMED = ("input_tokens", "output_tokens", "total_tokens")


def session_of(thread: ConversationThread) -> str | None:
    for key in SESSION_KEYS:
        value = thread.metadata.get(key)
        if value:
            return value
    return None


def session_thread_id(session: str, part: int = 1, scope: str = "") -> str:
    """The Context thread id of a session (with a shared book, apps can compute it to send feedback later).

    `scope` is empty for a book shared by every process, else the owning process's token.
    """
    suffix = "" if part == 1 else f"#{part}"
    if scope:
        suffix += f"@{scope}"
    return str(uuid.uuid5(THREAD_NAMESPACE, f"session/{session}{suffix}"))


@dataclass(slots=True)
class Turn:
    turn_id: str
    start_ns: int
    messages: list[dict]
    metadata: dict[str, str]

    @classmethod
    def of(cls, thread: ConversationThread) -> Turn:
        return cls(thread.id, thread.start_ns, [m.to_wire() for m in thread.messages], dict(thread.metadata))


class SessionStore(Protocol):
    scope: str  # "" when every process shares the book, else this process's token

    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        """Record a turn (a repeat of a known turn replaces it); the part and its turns in order."""

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        """The latest part of a session and its turns (empty if unknown)."""

    def reset_after_fork(self) -> None:
        """Renew what a forked child must not share with its parent."""


def merge(session: str, part: int, turns: list[Turn], scope: str = "") -> ConversationThread:
    """One thread of a session's turns: messages in turn order, the latest turn's metadata, summed usage."""
    ordered = sorted(turns, key=lambda t: (t.start_ns, t.turn_id))
    metadata = dict(ordered[-1].metadata)
    for key in SUMMED:
        values = [int(t.metadata[key]) for t in ordered if t.metadata.get(key, "").isdigit()]
        if values:
            metadata[key] = str(sum(values))
    metadata["turns"] = str(len(ordered))
    if part > 1:
        metadata["session_part"] = str(part)
    return ConversationThread(
        id=session_thread_id(session, part, scope),
        messages=[Message.from_wire(m) for t in ordered for m in t.messages],
        metadata=metadata,
        trace_id=metadata.get("trace_id", ""),
        start_ns=ordered[0].start_ns,
        name=ordered[-1].metadata.get("workflow", ""),
    )


class MemorySessions:
    """Sessions in memory, bounded in sessions, turns per thread, and idle time."""

    def __init__(self, max_sessions: int = 1_000, max_turns: int = 200, ttl_s: float = 86_400.0) -> None:
        self.max_sessions, self.max_turns, self.ttl_s = max_sessions, max_turns, ttl_s
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        """A new process: a new scope and an empty book (the parent's turns are the parent's thread)."""
        self.scope = secrets.token_hex(6)
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[float, int, dict[str, Turn]]] = OrderedDict()
        self._next_part: OrderedDict[str, int] = OrderedDict()  # forgotten sessions continue in a new part

    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            _, part, turns = self._sessions.pop(session, (now, self._next_part.pop(session, 1), {}))
            if turn.turn_id not in turns and len(turns) >= self.max_turns:
                part, turns = part + 1, {}
            turns[turn.turn_id] = turn
            self._sessions[session] = (now, part, turns)
            while len(self._sessions) > self.max_sessions:
                self._forget(*self._sessions.popitem(last=False))
            return part, list(turns.values())

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        with self._lock:
            _, part, turns = self._sessions.get(session, (0.0, 1, {}))
            return part, list(turns.values())

    def _expire(self, now: float) -> None:
        while self._sessions:
            touched = next(iter(self._sessions.values()))[0]
            if now - touched <= self.ttl_s:
                break
            self._forget(*self._sessions.popitem(last=False))

    def _forget(self, session: str, state: tuple[float, int, dict[str, Turn]]) -> None:
        self._next_part[session] = state[1] + 1
        while len(self._next_part) > 100 * self.max_sessions:
            self._next_part.popitem(last=False)


class SqliteSessions:
    """Sessions in SQLite (the sidecar, or the exporter with a spool): they survive restarts."""

    scope = ""  # shared by every process that opens the same file

    def __init__(self, path: str | Path, max_turns: int = 200, ttl_s: float = 86_400.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.max_turns, self.ttl_s = max_turns, ttl_s
        self._open()

    def _open(self) -> None:
        self._expired_at = 0.0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
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
        _INHERITED.append(self._db)  # never closed here: closing could disturb the parent's locks
        self._open()

    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        now = time.time()
        payload = json.dumps({"messages": turn.messages, "metadata": turn.metadata})
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if now - self._expired_at > 60:  # forgetting idle sessions is a scan: once a minute is plenty
                    self._db.execute("DELETE FROM turns WHERE touched < ?", (now - self.ttl_s,))
                    self._expired_at = now
                row = self._db.execute(
                    "SELECT part FROM turns WHERE session = ? AND turn_id = ?", (session, turn.turn_id)
                ).fetchone()
                part = row[0] if row else self._latest_part(session)
                if row is None:
                    held = self._count(session, part)
                    forgotten = held == 0 and self._known(session, part)  # idle past the TTL: never overwrite it
                    if held >= self.max_turns or forgotten:
                        part += 1
                self._db.execute(
                    "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                    (session, part, turn.turn_id, turn.start_ns, payload, now),
                )
                self._db.execute("UPDATE turns SET touched = ? WHERE session = ?", (now, session))
                self._db.execute(
                    "INSERT INTO parts VALUES (?, ?, ?, 1) ON CONFLICT (thread_id) DO UPDATE SET version = version + 1",
                    (session_thread_id(session, part), session, part),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return part, self._turns(session, part)

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        with self._lock:
            part = self._latest_part(session)
            return part, self._turns(session, part)

    def version(self, thread_id: str) -> int | None:
        """How many times the session part behind `thread_id` changed; None if it is no session thread."""
        with self._lock:
            row = self._db.execute("SELECT version FROM parts WHERE thread_id = ?", (thread_id,)).fetchone()
        return row[0] if row else None

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
        row = self._db.execute(
            "SELECT MAX(p) FROM (SELECT MAX(part) AS p FROM parts WHERE session = ?"
            " UNION ALL SELECT MAX(part) FROM turns WHERE session = ?)",
            (session, session),
        ).fetchone()
        return row[0] or 1

    def _known(self, session: str, part: int) -> bool:
        """Whether this part was ever written (its thread exists in Context)."""
        row = self._db.execute("SELECT 1 FROM parts WHERE session = ? AND part = ?", (session, part)).fetchone()
        return row is not None

    def _count(self, session: str, part: int) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM turns WHERE session = ? AND part = ?", (session, part)
        ).fetchone()[0]

    def _turns(self, session: str, part: int) -> list[Turn]:
        rows = self._db.execute(
            "SELECT turn_id, start_ns, payload FROM turns WHERE session = ? AND part = ?", (session, part)
        ).fetchall()
        out = []
        for turn_id, start_ns, payload in rows:
            data = json.loads(payload)
            out.append(Turn(turn_id, start_ns, data["messages"], data["metadata"]))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
