"""Conversations, not loose calls: every turn of a session goes into one Context thread, in order.

A turn is the thread one root made. When it carries a session id (`session_id`, `thread_id` or
`conversation_id` metadata, from association properties, OpenInference `session.id`, or GenAI
`gen_ai.conversation.id`), the book keeps the session's turns and the whole session thread is sent
again with a stable id: Context updates it in place. Turns are ordered by start time, so a turn
converted late still lands in its place. A session longer than `max_turns` continues in a new
thread (`part` 2, 3, ...) rather than dropping old turns; so does a session forgotten by a bounded
in-memory book, so an upload never overwrites a thread with fewer turns than it had.
"""

from __future__ import annotations

import json
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
SUMMED = ("input_tokens", "output_tokens", "total_tokens")


def session_of(thread: ConversationThread) -> str | None:
    for key in SESSION_KEYS:
        value = thread.metadata.get(key)
        if value:
            return value
    return None


def session_thread_id(session: str, part: int = 1) -> str:
    """The Context thread id of a session (apps can compute it to send feedback later)."""
    suffix = "" if part == 1 else f"#{part}"
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
    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        """Record a turn (a repeat of a known turn replaces it); the part and its turns in order."""

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        """The latest part of a session and its turns (empty if unknown)."""


def merge(session: str, part: int, turns: list[Turn]) -> ConversationThread:
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
        id=session_thread_id(session, part),
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

    def __init__(self, path: str | Path, max_turns: int = 200, ttl_s: float = 86_400.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.max_turns, self.ttl_s = max_turns, ttl_s
        self._expired_at = 0.0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last turn costs less than an fsync per turn
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS turns (session TEXT NOT NULL, part INTEGER NOT NULL, turn_id TEXT NOT NULL,"
            " start_ns INTEGER NOT NULL, payload TEXT NOT NULL, touched REAL NOT NULL,"
            " PRIMARY KEY (session, turn_id))"
        )

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
                if row is None and self._count(session, part) >= self.max_turns:
                    part += 1
                self._db.execute(
                    "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                    (session, part, turn.turn_id, turn.start_ns, payload, now),
                )
                self._db.execute("UPDATE turns SET touched = ? WHERE session = ?", (now, session))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return part, self._turns(session, part)

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        with self._lock:
            part = self._latest_part(session)
            return part, self._turns(session, part)

    def _latest_part(self, session: str) -> int:
        row = self._db.execute("SELECT MAX(part) FROM turns WHERE session = ?", (session,)).fetchone()
        return row[0] or 1

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
