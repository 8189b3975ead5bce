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
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from ..conversion.threads import THREAD_NAMESPACE
from ..model import ConversationThread, Message

SESSION_KEYS = ("session_id", "thread_id", "conversation_id")
INHERITED_HANDLES: list[object] = []  # handles a forked child keeps but never uses
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

    def versions(self, thread_ids: list[str]) -> dict[str, int]:
        """`version` of each thread id that is a session part (the others are left out), in one look."""

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


class SessionBook:
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

    def version(self, thread_id: str) -> int | None:
        raise NotImplementedError

    def versions(self, thread_ids: list[str]) -> dict[str, int]:
        """One `version` per id; a book that can ask for many at once does."""
        return {thread_id: version for thread_id in thread_ids if (version := self.version(thread_id)) is not None}


class MemorySessions(SessionBook):
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
