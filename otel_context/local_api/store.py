"""The local API's threads, in SQLite so a demo survives a restart and tests can count every write.

The rules, and where Context's documentation (docs.context.ai, Product Analytics -> API Ingestion Methods) states
them; each is the behaviour of the endpoint named, rephrased:

- "Thread Conversation" (`POST /api/v1/log/conversation/thread`): a POST without an `id` starts a new thread
  and answers its id; a POST with an `id` adds its messages after those already stored for that id (a new id
  starts a thread). The page says callers send only the new messages and the same thread metadata on every
  POST. It promises no de-duplication, so none is done here: the same messages sent twice are stored twice,
  which is how a test sees that a writer resent something.
- Our choice, from the same page: the thread metadata a read answers is the first POST's. The page asks that
  it never change and does not say what Context keeps when it does; keeping the first means a writer that
  changes it finds its later values missing, and each POST whose metadata differs from the first's is
  recorded (`posts.metadata`) and counted (`threads.metadata_changes`, in `/_admin/stats` and the web view).
- "[deprecated] Upsert Conversation" (`POST /api/v1/log/conversation/upsert`): every request carries the whole
  history so far; Context matches it to an earlier conversation by heuristics, or starts a new one. Ours,
  in `upsert_conversation`: an earlier upserted conversation matches when it was logged to within the last
  6 hours, has the same tenant and thread metadata, and its stored messages and the request begin with the
  same messages, at least 2 of them (compared on type, role, text and name; timestamps and ratings are
  ignored). The best match (the longest shared beginning, then the most recent) gets the request's messages
  past that shared beginning appended; no match starts a conversation. Custom events are refused there
  (the custom events page lists every ingestion method but upsert).
- "Log Conversation" (`POST /api/v1/log/conversation`): every request is a conversation of its own.
- "Patch Thread Message" (`PATCH /api/v1/log/conversation/thread/{id}`): Context names messages by the ids its
  ingestion answers; the SDK's `ThreadMessage` carries none, so here item i of the body updates message i.
- The "Conversations" read endpoint (`GET /api/v1/conversations/{id}`, Embedded API): the thread with its
  messages in stored order, each with its optional string `metadata`.

Storage: a thread row holds the counters; its messages are rows of `messages` keyed by (thread, position), so
an append inserts the new rows and never rewrites the thread; `posts` records every POST (its thread metadata,
which messages it brought). `writes` counts the POSTs to a thread. One connection is shared by the server loop
and test threads (`check_same_thread=False`), serialised by a lock; each POST is one transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from ..private_files import private_database
from .validation import ValidationError

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    tenant_id TEXT,
    metadata TEXT NOT NULL,
    feedback TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    writes INTEGER NOT NULL DEFAULT 1,
    message_count INTEGER NOT NULL DEFAULT 0,
    metadata_changes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS threads_created_at ON threads (created_at);
CREATE INDEX IF NOT EXISTS threads_recent_by_kind ON threads (kind, updated_at);
CREATE TABLE IF NOT EXISTS messages (
    thread INTEGER NOT NULL,
    position INTEGER NOT NULL,
    post INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (thread, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS posts (
    thread INTEGER NOT NULL,
    number INTEGER NOT NULL,
    received_at REAL NOT NULL,
    first_position INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (thread, number)
) WITHOUT ROWID;
"""
# threads.seq: the rowid, which messages.thread and posts.thread refer to; kind: the endpoint that created the
# thread (thread, conversation or upsert); metadata: the first POST's thread metadata, JSON with sorted keys;
# writes: POSTs to the thread; metadata_changes: POSTs whose thread metadata differed from the first's.
# messages.position counts from 0 in stored order; messages.post and posts.number count POSTs from 1.

# A database written before appends (one row per id, its messages a JSON array, replaced by each write) is
# converted once on opening: each thread becomes a thread of one POST.
UPGRADE_FROM_REPLACING = f"""
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS threads_created_at;
ALTER TABLE threads RENAME TO threads_replacing;
{SCHEMA}
INSERT INTO threads (id, kind, tenant_id, metadata, feedback, created_at, updated_at, writes, message_count)
    SELECT id, 'thread', tenant_id, metadata, feedback, created_at, updated_at, writes, json_array_length(messages)
    FROM threads_replacing ORDER BY rowid;
INSERT INTO messages (thread, position, post, body)
    SELECT t.seq, CAST(m.key AS INTEGER), 1, m.value
    FROM threads_replacing AS old JOIN threads AS t ON t.id = old.id, json_each(old.messages) AS m;
INSERT INTO posts (thread, number, received_at, first_position, message_count, metadata)
    SELECT seq, 1, updated_at, 0, message_count, metadata FROM threads;
DROP TABLE threads_replacing;
COMMIT;
"""

UPSERT_MIN_SHARED = 2  # messages a request must share with an earlier conversation to amend it
UPSERT_WINDOW_S = 6 * 3600  # how recently that conversation must have been logged to
_IN_CHUNK = 500  # ids per `IN (...)`, well under SQLite's parameter limit

ThreadPage = tuple[list[dict[str, Any]], int]  # aliased: inside ThreadStore, `list` names the method

COLUMNS = "seq, id, kind, tenant_id, metadata, feedback, created_at, updated_at, writes, metadata_changes"


class ThreadStore:
    """Conversation threads keyed by id; a POST with a known id appends its messages (see the module docstring)."""

    def __init__(self, path: str = ":memory:", *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        file = private_database(path, check_directory=False)  # 0600, never through a symlink
        self._db = sqlite3.connect(file, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        _upgrade_from_replacing(self._db)
        self._db.executescript(SCHEMA)

    # --- writing -------------------------------------------------------------------------------------------

    def post_thread(self, conv: dict[str, Any], tenant_id: str | None = None) -> str:
        """`log/conversation/thread`: append the messages to the thread `conv["id"]`, created if new.

        Without an id, a new thread with a fresh uuid4. Returns the thread's id.
        """
        thread_id = conv.get("id") or str(uuid.uuid4())
        with self._transaction():
            self._append(thread_id, "thread", conv, tenant_id)
        return thread_id

    def add_conversation(self, conv: dict[str, Any], tenant_id: str | None = None) -> str:
        """`log/conversation`: always a new conversation (the legacy model has no id; one sent is ignored)."""
        thread_id = str(uuid.uuid4())
        with self._transaction():
            self._append(thread_id, "conversation", conv, tenant_id)
        return thread_id

    def upsert_conversation(self, conv: dict[str, Any], tenant_id: str | None = None) -> str:
        """`log/conversation/upsert`: amend the earlier conversation this whole history matches, else a new one."""
        messages = conv.get("messages") or []
        with self._transaction():
            match = self._upsert_match(messages, _metadata_json(conv), tenant_id)
            if match is None:
                thread_id = str(uuid.uuid4())
                self._append(thread_id, "upsert", conv, tenant_id)
            else:
                thread_id, shared = match
                self._append(thread_id, "upsert", {**conv, "messages": messages[shared:]}, tenant_id)
        return thread_id

    def rate(self, thread_id: str, updates: list[dict[str, Any]]) -> bool:
        """Apply PATCH item i (a `ThreadMessage`, e.g. its rating) to message i; False when the id is unknown."""
        with self._transaction():
            row = self._db.execute("SELECT seq, message_count FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None:
                return False
            seq, count = row
            if len(updates) > count:
                raise ValidationError(
                    f"body[{count}]: thread {thread_id} has only {count} message(s), got {len(updates)} updates"
                )
            for position, update in enumerate(updates):
                changes = {k: v for k, v in update.items() if v is not None}
                if not changes:
                    continue
                where = (seq, position)
                (body,) = self._db.execute(
                    "SELECT body FROM messages WHERE thread = ? AND position = ?", where
                ).fetchone()
                message = {**json.loads(body), **changes}
                self._db.execute(
                    "UPDATE messages SET body = ? WHERE thread = ? AND position = ?", (json.dumps(message), *where)
                )
        return True

    # --- reading -------------------------------------------------------------------------------------------

    def get(self, thread_id: str) -> dict[str, Any] | None:
        """The thread with its messages in stored order and its POSTs (`posts`), or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None:
                return None
            thread = _thread(row, self._messages([row[0]])[row[0]])
            thread["posts"] = self._posts(row[0], thread["metadata"])
        return thread

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
            messages = self._messages([row[0] for row in rows])
        return [_thread(row, messages[row[0]]) for row in rows], total

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM threads").fetchone()[0]

    def message_count(self) -> int:
        """Messages stored, over all threads."""
        with self._lock:
            return self._db.execute("SELECT COALESCE(SUM(message_count), 0) FROM threads").fetchone()[0]

    def write_count(self, thread_id: str) -> int:
        """How many POSTs this id received (appends, and the upserts matched to it); 0 if never."""
        with self._lock:
            row = self._db.execute("SELECT writes FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return 0 if row is None else row[0]

    def write_counts(self) -> dict[str, int]:
        """POSTs per thread id, threads in creation order."""
        with self._lock:
            return dict(self._db.execute("SELECT id, writes FROM threads ORDER BY seq").fetchall())

    def metadata_changes(self) -> dict[str, int]:
        """Threads some POST of which carried thread metadata other than the first POST's: id -> such POSTs."""
        with self._lock:
            rows = self._db.execute("SELECT id, metadata_changes FROM threads WHERE metadata_changes > 0 ORDER BY seq")
            return dict(rows.fetchall())

    def summary(self) -> dict[str, Any]:
        """The store's part of `/_admin/stats`, read at one instant.

        POSTs per id, threads, messages, and how many threads (and POSTs) changed the thread metadata.
        """
        with self._lock:
            threads, messages = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(message_count), 0) FROM threads"
            ).fetchone()
            changed_threads, changed_posts = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(metadata_changes), 0) FROM threads WHERE metadata_changes > 0"
            ).fetchone()
            return {
                "writes": self.write_counts(),
                "threads": threads,
                "messages": messages,
                "threads_metadata_changed": changed_threads,
                "posts_metadata_changed": changed_posts,
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- inside ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """The lock and one SQLite transaction: a POST is stored whole or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _append(self, thread_id: str, kind: str, conv: dict[str, Any], tenant_id: str | None) -> None:
        """One POST to `thread_id`: its messages after the stored ones, its thread metadata recorded and compared."""
        messages = conv.get("messages") or []
        metadata = _metadata_json(conv)
        now = self._clock()
        row = self._db.execute("SELECT seq, metadata, writes, message_count FROM threads WHERE id = ?", (thread_id,))
        found = row.fetchone()
        if found is None:
            seq = self._db.execute(
                "INSERT INTO threads (id, kind, tenant_id, metadata, feedback, created_at, updated_at, writes,"
                " message_count) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (thread_id, kind, tenant_id, metadata, conv.get("feedback"), now, now, len(messages)),
            ).lastrowid
            number, start = 1, 0
        else:
            seq, first_metadata, writes, start = found
            changed = json.loads(first_metadata) != json.loads(metadata)
            self._db.execute(
                "UPDATE threads SET tenant_id = COALESCE(?, tenant_id), feedback = COALESCE(?, feedback),"
                " updated_at = ?, writes = writes + 1, message_count = message_count + ?,"
                " metadata_changes = metadata_changes + ? WHERE seq = ?",
                (tenant_id, conv.get("feedback"), now, len(messages), int(changed), seq),
            )
            number = writes + 1
        self._db.executemany(
            "INSERT INTO messages (thread, position, post, body) VALUES (?, ?, ?, ?)",
            ((seq, start + i, number, json.dumps(m)) for i, m in enumerate(messages)),
        )
        self._db.execute(
            "INSERT INTO posts (thread, number, received_at, first_position, message_count, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (seq, number, now, start, len(messages), metadata),
        )

    def _upsert_match(
        self, messages: list[dict[str, Any]], metadata: str, tenant_id: str | None
    ) -> tuple[str, int] | None:
        """The conversation an upsert amends and how many leading messages they share, or None (the heuristic)."""
        if len(messages) < UPSERT_MIN_SHARED:
            return None
        keys = [_match_key(m) for m in messages]
        candidates = self._db.execute(
            "SELECT seq, id FROM threads WHERE kind = 'upsert' AND updated_at >= ? AND tenant_id IS ?"
            " AND metadata = ? ORDER BY updated_at DESC, seq DESC",
            (self._clock() - UPSERT_WINDOW_S, tenant_id, metadata),
        ).fetchall()
        best: tuple[str, int] | None = None
        for seq, thread_id in candidates:
            stored = self._db.execute(
                "SELECT body FROM messages WHERE thread = ? AND position < ? ORDER BY position", (seq, len(keys))
            )
            shared = 0
            for (body,), key in zip(stored, keys, strict=False):
                if _match_key(json.loads(body)) != key:
                    break
                shared += 1
            if shared >= UPSERT_MIN_SHARED and (best is None or shared > best[1]):
                best = (thread_id, shared)
        return best

    def _messages(self, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The messages of these threads, each list in stored order."""
        found: dict[int, list[dict[str, Any]]] = {seq: [] for seq in seqs}
        for i in range(0, len(seqs), _IN_CHUNK):
            chunk = seqs[i : i + _IN_CHUNK]
            rows = self._db.execute(
                f"SELECT thread, body FROM messages WHERE thread IN ({', '.join('?' * len(chunk))})"
                " ORDER BY thread, position",
                chunk,
            )
            for seq, body in rows:
                found[seq].append(json.loads(body))
        return found

    def _posts(self, seq: int, first_metadata: dict[str, str]) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT number, received_at, first_position, message_count, metadata FROM posts WHERE thread = ?"
            " ORDER BY number",
            (seq,),
        )
        posts = []
        for number, received_at, first_position, count, metadata in rows:
            carried = json.loads(metadata)
            posts.append(
                {
                    "number": number,
                    "received_at": _iso(received_at),
                    "first_position": first_position,
                    "messages": count,
                    "metadata": carried,
                    "metadata_changed": carried != first_metadata,
                }
            )
        return posts


def _upgrade_from_replacing(db: sqlite3.Connection) -> None:
    """Convert a database of the replacing store (a `messages` column in `threads`) to this schema, once."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(threads)")}
    if "messages" not in columns:
        return
    try:
        db.executescript(UPGRADE_FROM_REPLACING)
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _metadata_json(conv: dict[str, Any]) -> str:
    """The thread metadata as stored and compared: JSON with sorted keys, `{}` when there is none."""
    return json.dumps(conv.get("metadata") or {}, sort_keys=True)


def _match_key(message: dict[str, Any]) -> tuple[Any, ...]:
    """What the upsert heuristic compares: not the timestamp (a resent history may render it anew) nor ratings."""
    return (message.get("type") or "message", message.get("role"), message.get("message"), message.get("name"))


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


def _thread(row: tuple[Any, ...], messages: list[dict[str, Any]]) -> dict[str, Any]:
    _, thread_id, kind, tenant_id, metadata, feedback, created_at, updated_at, writes, changes = row
    return {
        "id": thread_id,
        "kind": kind,
        "tenant_id": tenant_id,
        "metadata": json.loads(metadata),
        "messages": messages,
        "feedback": feedback,
        "created_at": _iso(created_at),
        "updated_at": _iso(updated_at),
        "writes": writes,
        "metadata_changes": changes,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
