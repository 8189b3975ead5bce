"""The local API's threads, in SQLite so a demo survives a restart and tests can count every write.

One connection shared by the server loop and test threads (`check_same_thread=False`), serialised by a lock.
The `writes` column counts ingests per id: a retry that reuses the thread id must raise it, never add a row.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .validation import ValidationError

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    metadata TEXT NOT NULL,
    messages TEXT NOT NULL,
    feedback TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    writes INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS threads_created_at ON threads (created_at);
"""

UPSERT = """
INSERT INTO threads (id, tenant_id, metadata, messages, feedback, created_at, updated_at, writes)
VALUES (:id, :tenant_id, :metadata, :messages, :feedback, :now, :now, 1)
ON CONFLICT (id) DO UPDATE SET
    tenant_id = COALESCE(excluded.tenant_id, threads.tenant_id),
    metadata = excluded.metadata,
    messages = excluded.messages,
    feedback = excluded.feedback,
    updated_at = excluded.updated_at,
    writes = threads.writes + 1
"""

ThreadPage = tuple[list[dict[str, Any]], int]  # aliased: inside ThreadStore, `list` names the method

COLUMNS = "id, tenant_id, metadata, messages, feedback, created_at, updated_at, writes"


class ThreadStore:
    """Conversation threads keyed by id; a second write of an id replaces it ("ingested or updated")."""

    def __init__(self, path: str = ":memory:", *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def upsert_thread(self, conv: dict[str, Any], tenant_id: str | None = None) -> str:
        """Store a validated `Thread`; returns its id, a fresh uuid4 when the writer gave none."""
        thread_id = conv.get("id") or str(uuid.uuid4())
        row = {
            "id": thread_id,
            "tenant_id": tenant_id,
            "metadata": json.dumps(conv.get("metadata") or {}),
            "messages": json.dumps(conv.get("messages") or []),
            "feedback": conv.get("feedback"),
            "now": self._clock(),
        }
        with self._lock:
            self._db.execute(UPSERT, row)
        return thread_id

    def add_conversation(self, conv: dict[str, Any], tenant_id: str | None = None) -> str:
        """The legacy `Conversation` (log/conversation and upsert): no id in the model, so usually a new thread."""
        return self.upsert_thread(conv, tenant_id)

    def rate(self, thread_id: str, updates: list[dict[str, Any]]) -> bool:
        """Apply PATCH item i (a `ThreadMessage`, e.g. its rating) to message i; False when the id is unknown."""
        with self._lock:
            row = self._db.execute("SELECT messages FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None:
                return False
            messages = json.loads(row[0])
            if len(updates) > len(messages):
                raise ValidationError(
                    f"body[{len(messages)}]: thread {thread_id} has only {len(messages)} message(s), "
                    f"got {len(updates)} updates"
                )
            for message, update in zip(messages, updates, strict=False):
                message.update({k: v for k, v in update.items() if v is not None})
            self._db.execute("UPDATE threads SET messages = ? WHERE id = ?", (json.dumps(messages), thread_id))
        return True

    def get(self, thread_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return None if row is None else _thread(row)

    def list(
        self,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page: int = 1,
        per_page: int = 20,
        user_id: str | None = None,
        session_id: str | None = None,
        tenant_id: str | None = None,
    ) -> ThreadPage:
        """One page of threads first ingested in [start_time, end_time), newest first, and the total matching."""
        where, params = _filters(start_time, end_time, user_id, session_id, tenant_id)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM threads{where}", params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM threads{where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                [*params, per_page, (page - 1) * per_page],
            ).fetchall()
        return [_thread(row) for row in rows], total

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM threads").fetchone()[0]

    def write_count(self, thread_id: str) -> int:
        """How many times this id was ingested; 0 if never."""
        with self._lock:
            row = self._db.execute("SELECT writes FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return 0 if row is None else row[0]

    def write_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT id, writes FROM threads ORDER BY rowid").fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _filters(
    start_time: datetime | None,
    end_time: datetime | None,
    user_id: str | None,
    session_id: str | None,
    tenant_id: str | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if start_time is not None:
        clauses.append("created_at >= ?")
        params.append(start_time.timestamp())
    if end_time is not None:
        clauses.append("created_at < ?")
        params.append(end_time.timestamp())
    for key, value in (("user_id", user_id), ("session_id", session_id)):
        if value is not None:
            clauses.append(f"json_extract(metadata, '$.\"{key}\"') = ?")
            params.append(value)
    if tenant_id is not None:
        clauses.append("tenant_id = ?")
        params.append(tenant_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _thread(row: tuple[Any, ...]) -> dict[str, Any]:
    thread_id, tenant_id, metadata, messages, feedback, created_at, updated_at, writes = row
    return {
        "id": thread_id,
        "tenant_id": tenant_id,
        "metadata": json.loads(metadata),
        "messages": json.loads(messages),
        "feedback": feedback,
        "created_at": _iso(created_at),
        "updated_at": _iso(updated_at),
        "writes": writes,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
