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
  process of the host, the Redis book (`OTEL_EXPORTER_CONTEXT_SESSION_DB=redis://...`) by every
  process of every host (sidecar replicas behind a load balancer): one thread per session, with a
  version that rises with each turn. Just before an upload is sent, the book is asked whether the
  part is still at the version its body was built from (else the body is rebuilt from the book), and
  it is sent again if the version moved while it was on the wire, so the last write to reach Context
  always holds every turn.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from ..conversion.threads import THREAD_NAMESPACE
from ..environment_variables import OTEL_EXPORTER_CONTEXT_SESSION_DB
from ..model import ConversationThread, Message
from ..shared_sqlite import connect_shared

_logger = logging.getLogger(__name__)
SESSION_KEYS = ("session_id", "thread_id", "conversation_id")
_INHERITED: list[object] = []  # handles a forked child keeps but never uses
SUMMED = ("input_tokens", "output_tokens", "total_tokens")


def session_of(thread: ConversationThread) -> str | None:
    for key in SESSION_KEYS:
        value = thread.metadata.get(key)
        if value:
            return value
    return None


@functools.lru_cache(maxsize=4096)
def session_thread_id(session: str, part: int = 1, scope: str = "") -> str:
    """The Context thread id of a session (with a shared book, apps can compute it to send feedback later).

    `scope` is empty for a book shared by every process, else the owning process's token. Cached: each
    turn asks for it twice (the book's row, the merged thread), and a session's turns come close together.
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
    shared: bool  # True: uploads are rebuilt from the book (`current`) and re-sent when `version` moved

    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        """Record a turn (a repeat of a known turn replaces it); the part and its turns in order."""

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        """The latest part of a session and its turns (empty if unknown)."""

    def reset_after_fork(self) -> None:
        """Renew what a forked child must not share with its parent."""

    def fold(self, session: str, turn: Turn) -> ConversationThread:
        """Record a turn and return its session's thread as it now stands."""

    def fold_all(self, turns: list[tuple[str, Turn]]) -> list[tuple[ConversationThread, int | None]]:
        """`fold` each (session, turn) in order; with each thread, the version of the part it was built
        from (a shared book; else None): while `version` still says so, the thread is what `current` builds."""

    def latest(self, session: str) -> ConversationThread | None:
        """The session's latest thread, None if unknown."""

    def current(self, thread_id: str) -> tuple[int, ConversationThread] | None:
        """A shared book: the version and whole thread of a session part now (None: not a session thread)."""

    def version(self, thread_id: str) -> int | None:
        """A shared book: how many times the session part behind `thread_id` changed."""

    def close(self) -> None:
        """Release connections and files."""


class SessionStoreUnavailable(RuntimeError):
    """The shared book cannot be read right now (Redis down): an upload waits rather than risk a stale write."""


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


class _Book:
    """What every book offers the pipeline on top of `add` / `turns`: whole session threads."""

    scope: str

    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        raise NotImplementedError

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        raise NotImplementedError

    def fold(self, session: str, turn: Turn) -> ConversationThread:
        """Record a turn and return its session's thread as it now stands."""
        return self.fold_all([(session, turn)])[0][0]

    def fold_all(self, turns: list[tuple[str, Turn]]) -> list[tuple[ConversationThread, int | None]]:
        out: list[tuple[ConversationThread, int | None]] = []
        for session, turn in turns:
            part, held = self.add(session, turn)
            out.append((merge(session, part, held, self.scope), None))
        return out

    def latest(self, session: str) -> ConversationThread | None:
        """The session's latest thread (for feedback naming a session), None if unknown."""
        part, turns = self.turns(session)
        return merge(session, part, turns, self.scope) if turns else None


class MemorySessions(_Book):
    """Sessions in memory, bounded in sessions, turns per thread, and idle time."""

    shared = False

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

    def current(self, thread_id: str) -> tuple[int, ConversationThread] | None:
        return None  # one process, one upload per thread id at a time: the queued body is the newest

    def version(self, thread_id: str) -> int | None:
        return None

    def close(self) -> None:
        pass

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


class SqliteSessions(_Book):
    """Sessions in SQLite (the sidecar, or the exporter with a spool): they survive restarts."""

    scope = ""  # shared by every process that opens the same file
    shared = True

    def __init__(self, path: str | Path, max_turns: int = 200, ttl_s: float = 86_400.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
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
        _INHERITED.append(self._db)  # never closed here: closing could disturb the parent's locks
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

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_KEEP_FACTOR = 10  # a session's part counter outlives its turns: a session resumed after the TTL gets a new part
_RETRY_S = 1.0  # while Redis is down, how often it is tried again (never a connect timeout per turn)

# Atomic add: the turn's part (its old one if known, else the latest, or the next when that one is
# full or was forgotten), the turn stored, the part's version raised, and the part's thread id (the
# uuid5 of `session_thread_id`, from redis.sha1hex) mapped to it for `current`; returns part and turns.
_ADD = """
local function thread_id(session, part)
  local name = 'session/' .. session
  if part > 1 then name = name .. '#' .. part end
  local h = redis.sha1hex(ARGV[8] .. name)
  local variant = string.format('%x', tonumber(string.sub(h, 17, 17), 16) % 4 + 8)
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-5' .. string.sub(h, 14, 16) .. '-'
    .. variant .. string.sub(h, 18, 20) .. '-' .. string.sub(h, 21, 32)
end
local S, tprefix = KEYS[1], ARGV[7]
local turn_id, max_turns = ARGV[2], tonumber(ARGV[4])
local part = tonumber(redis.call('HGET', S, 't:' .. turn_id) or 0)
if part == 0 then
  part = tonumber(redis.call('HGET', S, 'part') or 1)
  local held = redis.call('HLEN', tprefix .. part)
  if held >= max_turns or (held == 0 and redis.call('HEXISTS', S, 'v:' .. part) == 1) then
    part = part + 1
  end
  redis.call('HSET', S, 't:' .. turn_id, part)
end
if part > tonumber(redis.call('HGET', S, 'part') or 0) then redis.call('HSET', S, 'part', part) end
local T = tprefix .. part
redis.call('HSET', T, turn_id, ARGV[3])
redis.call('PEXPIRE', T, ARGV[5])
local version = redis.call('HINCRBY', S, 'v:' .. part, 1)
redis.call('PEXPIRE', S, ARGV[6])
redis.call('SET', ARGV[9] .. thread_id(ARGV[1], part), ARGV[10] .. '\\n' .. part .. '\\n' .. ARGV[1], 'PX', ARGV[6])
return {part, version, redis.call('HVALS', T)}
"""

# One read of a session part by thread id: version, and (ARGV[2] == '1') part, session and turns.
_READ = """
local m = redis.call('GET', KEYS[1])
if not m then return false end
local tag, part, session = string.match(m, '^([^\\n]*)\\n([^\\n]*)\\n(.*)$')
local base = ARGV[1] .. '{' .. tag .. '}:'
local v = redis.call('HGET', base .. 'session', 'v:' .. part)
if not v then return false end
if ARGV[2] == '0' then return {v} end
return {v, part, session, redis.call('HVALS', base .. 'turns:' .. part)}
"""

# The latest part of a session and its turns.
_LATEST = """
local part = redis.call('HGET', KEYS[1], 'part')
if not part then return false end
return {part, redis.call('HVALS', ARGV[1] .. part)}
"""


class RedisSessions(_Book):
    """Sessions in Redis, shared by every replica and worker: `OTEL_EXPORTER_CONTEXT_SESSION_DB=redis://host:port/db`.

    Each add is one Lua script, so turns of one session added at the same moment on two hosts both land
    and each raises the part's version. Idle sessions go by key expiry. When Redis cannot be reached,
    one line says so and turns go to an in-memory book scoped to this process (a thread of its own, as
    with the default book: nothing lost, nothing overwritten) until Redis answers again; uploads of
    shared threads wait (retried) rather than risk sending a stale version.
    """

    scope = ""
    shared = True

    def __init__(
        self, url: str, max_turns: int = 200, ttl_s: float = 86_400.0, *, prefix: str = "otel-context:"
    ) -> None:
        try:
            import redis
        except ImportError:
            from ..config import ConfigError

            raise ConfigError(
                f"{OTEL_EXPORTER_CONTEXT_SESSION_DB}={redact_url(url)} needs the Redis client: "
                "pip install 'otel-context[redis]'"
            ) from None
        self._redis_module = redis
        self.url, self.max_turns, self.ttl_s, self.prefix = url, max_turns, ttl_s, prefix
        self._open()

    def _open(self) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry (a pooled connection Redis closed when it restarted), never a backoff:
        # the sidecar adds turns on its event loop. Retrying an add is safe: a known turn id is replaced.
        self._client = self._redis_module.Redis.from_url(
            self.url,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 1),
        )
        self._add = self._client.register_script(_ADD)
        self._read = self._client.register_script(_READ)
        self._latest = self._client.register_script(_LATEST)
        self._state = threading.Lock()
        self._down_until = 0.0  # monotonic instant before which Redis is not tried again
        self._down = False
        self._fallback = MemorySessions(max_turns=self.max_turns, ttl_s=self.ttl_s)
        self._local_ids: OrderedDict[str, None] = OrderedDict()  # fallback thread ids: sent as they are

    def reset_after_fork(self) -> None:
        """A forked child opens its own connections (a socket must not be shared with the parent)."""
        _INHERITED.append(self._client)
        self._open()

    # -- keys --------------------------------------------------------------------------------------
    def _tag(self, session: str) -> str:
        """A hash tag per session: its keys share one Redis Cluster slot, whatever the session id holds."""
        return hashlib.sha1(session.encode()).hexdigest()[:20]

    def _base(self, tag: str) -> str:
        return f"{self.prefix}{{{tag}}}:"

    def _thread_key(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{thread_id}"

    # -- outages -----------------------------------------------------------------------------------
    def _available(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        with self._state:
            self._down_until = time.monotonic() + _RETRY_S
            if not self._down:
                self._down = True
                _logger.error(
                    "otel-context: session store %s unreachable (%s); new turns go to this process's own "
                    "session threads until it answers again",
                    redact_url(self.url),
                    error,
                )

    def _answered(self) -> None:
        if self._down:
            with self._state:
                if self._down:
                    self._down = False
                    _logger.warning(
                        "otel-context: session store %s reachable again; sessions continue in their shared threads",
                        redact_url(self.url),
                    )

    def _errors(self) -> tuple[type[Exception], ...]:
        exceptions = self._redis_module.exceptions
        return (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.BusyLoadingError, OSError)

    # -- the book ------------------------------------------------------------------------------------
    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        part, turns, _ = self._add_shared(session, turn)
        return part, turns

    def _add_shared(self, session: str, turn: Turn) -> tuple[int, list[Turn], int | None]:
        """The part and its turns, and the part's version: None when the turn went to the fallback book."""
        if self._available():
            tag = self._tag(session)
            base = self._base(tag)
            payload = json.dumps([turn.turn_id, turn.start_ns, turn.messages, turn.metadata])
            keep_ms = int(self.ttl_s * 1000 * _KEEP_FACTOR)
            try:
                part, version, payloads = self._add(
                    keys=[base + "session"],
                    args=[
                        session,
                        turn.turn_id,
                        payload,
                        self.max_turns,
                        int(self.ttl_s * 1000),
                        keep_ms,
                        base + "turns:",
                        THREAD_NAMESPACE.bytes,
                        self._thread_key(""),
                        tag,
                    ],
                )
                part = int(part)
            except self._errors() as error:
                self._failed(error)
            else:
                self._answered()
                return part, _decode(payloads), int(version)
        part, turns = self._fallback.add(session, turn)
        return part, turns, None

    def fold_all(self, turns: list[tuple[str, Turn]]) -> list[tuple[ConversationThread, int | None]]:
        return [self._fold(session, turn) for session, turn in turns]

    def _fold(self, session: str, turn: Turn) -> tuple[ConversationThread, int | None]:
        part, held, version = self._add_shared(session, turn)
        if version is not None:
            return merge(session, part, held), version
        thread = merge(session, part, held, self._fallback.scope)
        self._local_ids[thread.id] = None
        while len(self._local_ids) > 10_000:
            self._local_ids.popitem(last=False)
        return thread, None

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        if self._available():
            tag = self._tag(session)
            try:
                found = self._latest(keys=[self._base(tag) + "session"], args=[self._base(tag) + "turns:"])
            except self._errors() as error:
                self._failed(error)
            else:
                self._answered()
                return (int(found[0]), _decode(found[1])) if found else (1, [])
        return 1, []

    def latest(self, session: str) -> ConversationThread | None:
        part, turns = self.turns(session)
        if turns:
            return merge(session, part, turns)
        part, turns = self._fallback.turns(session)
        return merge(session, part, turns, self._fallback.scope) if turns else None

    def current(self, thread_id: str) -> tuple[int, ConversationThread] | None:
        """Raises `SessionStoreUnavailable` when Redis is down: the upload is retried, never sent stale."""
        found = self._read_part(thread_id, with_turns=True)
        if found is None:
            return None
        version, part, session, payloads = found
        turns = _decode(payloads)
        return (int(version), merge(session.decode(), int(part), turns)) if turns else None

    def version(self, thread_id: str) -> int | None:
        found = self._read_part(thread_id, with_turns=False)
        return int(found[0]) if found is not None else None

    def _read_part(self, thread_id: str, *, with_turns: bool) -> list | None:
        if thread_id in self._local_ids:
            return None
        if not self._available():
            raise SessionStoreUnavailable(f"session store {redact_url(self.url)} unreachable")
        try:
            found = self._read(keys=[self._thread_key(thread_id)], args=[self.prefix, "1" if with_turns else "0"])
        except self._errors() as error:
            self._failed(error)
            raise SessionStoreUnavailable(f"session store {redact_url(self.url)} unreachable: {error}") from error
        self._answered()
        return found or None

    def close(self) -> None:
        self._client.close()


def _decode(payloads: list[bytes]) -> list[Turn]:
    out = []
    for payload in payloads:
        turn_id, start_ns, messages, metadata = json.loads(payload)
        out.append(Turn(turn_id, start_ns, messages, metadata))
    return out


def redact_url(url: str) -> str:
    """A store URL fit for a log line: its password replaced."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def is_redis_url(value: str | None) -> bool:
    return bool(value) and value.startswith(REDIS_SCHEMES)  # type: ignore[union-attr]
