"""Conversations, not loose calls: every turn of a session is appended to one Context thread, once.

A turn is the thread one root made. When it carries a session id (`session_id`, `thread_id` or
`conversation_id` metadata, from association properties, OpenInference `session.id`, or GenAI
`gen_ai.conversation.id`), it is sent as one POST of **only its own messages** to its session's
thread: Context appends them (see `local_api/store.py`). Nothing is rebuilt or re-sent, so the book
keeps no message content: per session, the part its turns go to, how many turns and messages the part
holds (a rating's index), the thread metadata the part's first turn fixed (every POST of a thread
carries the same), and the ids of its recent turns (a turn seen again is placed where it was).

A session longer than `max_turns` continues in a new thread (`part` 2, 3, ...). A session the book
forgot (idle past the TTL, or pushed out of a bounded in-memory book) continues in a new part too:
its thread metadata is fixed anew, so it must not join the thread it had.

Which process may append to a session's thread:
- the in-memory book (the default) knows only this process's turns, so its threads are scoped to the
  process: a restarted process or a second worker continues the session in a thread of its own;
- the SQLite book (`OTEL_EXPORTER_CONTEXT_SESSION_DB`, or beside the spool) is shared by every
  process of the host, the Redis book (`OTEL_EXPORTER_CONTEXT_SESSION_DB=redis://...`) by every
  process of every host (sidecar replicas): one thread per session, its turns placed atomically (part,
  offset), each turn once. Appends of one process go in the order its turns completed (its queue sends
  one upload per thread at a time); appends of two processes to one session may interleave, by turn.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from ..conversion.threads import namespaced_id
from ..model import ConversationThread

SESSION_KEYS = ("session_id", "thread_id", "conversation_id")
# What conversion writes about one run (conversion/threads.py, evaluations.py, cost.py, the trace buffer):
# in a session thread these go on the run's messages. Everything else (session and user ids, the service,
# the app's own metadata such as a plan or a tenant) is the session's: fixed by its part's first turn and
# the same on every POST of the thread, as Context asks.
RUN_FACTS = frozenset(
    {
        "trace_id", "span_id", "started_at", "latency_ms", "workflow", "operation", "model", "tags",
        "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_usd", "cost_source", "cost_unpriced_models", "io_source", "feedback_rating",
        "eval_rating", "error", "error_type", "error_message", "incomplete", "incomplete_reason",
    }
)  # fmt: skip
RUN_FACT_PREFIXES = ("eval.", "cost_usd.")


def is_run_fact(key: str) -> bool:
    """Whether a metadata key says something of one run rather than of its session."""
    return key in RUN_FACTS or key.startswith(RUN_FACT_PREFIXES)


INHERITED_HANDLES: list[object] = []  # handles a forked child keeps but never uses
# Turn ids the in-memory book remembers per session, to place a run converted twice where it went: in a
# process, that is a retried export of the last few runs (nothing replays older ones).
RECENT_TURNS = 16


def session_of(thread: ConversationThread) -> str | None:
    for key in SESSION_KEYS:
        value = thread.metadata.get(key)
        if value:
            return value
    return None


@functools.lru_cache(maxsize=4096)
def session_thread_id(session: str, part: int = 1, scope: str = "") -> str:
    """The Context thread id of a session (with a shared book, apps can compute it to send feedback later).

    `scope` is empty for a book shared by every process, else the owning process's token.
    """
    suffix = "" if part == 1 else f"#{part}"
    if scope:
        suffix += f"@{scope}"
    return namespaced_id(f"session/{session}{suffix}")


@dataclass(frozen=True, slots=True)
class Turn:
    """What the book needs of a turn: no content, only its id, size and the metadata it would fix."""

    session: str
    turn_id: str  # the run's own thread id (from its trace and root span)
    metadata: dict[str, str]  # the thread metadata this turn fixes if it opens a part
    messages: int  # how many messages it appends
    answer: int  # index of its last answer among them, -1 if none

    @classmethod
    def of(cls, session: str, thread: ConversationThread) -> Turn:
        answers = [i for i, m in enumerate(thread.messages) if m.role == "assistant" and m.type == "message"]
        fixed = {key: value for key, value in thread.metadata.items() if not is_run_fact(key)}
        return cls(session, thread.id, fixed, len(thread.messages), answers[-1] if answers else -1)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a turn goes: its session thread, the thread's fixed metadata, and its first message's index."""

    thread_id: str
    metadata: dict[str, str]
    offset: int
    repeat: bool = False  # the book had placed this turn before (a replay, or the same run sent twice)


class SessionStore(Protocol):
    scope: str  # "" when every process shares the book, else this process's token
    shared: bool

    def place_all(self, turns: list[Turn]) -> list[Placement]:
        """Place each turn in order (a known turn where it was); raises `SessionStoreUnavailable`."""

    def latest_answer(self, session: str) -> tuple[str, int] | None:
        """The session thread and index of its latest answer, for feedback naming a session."""

    def reset_after_fork(self) -> None:
        """Renew what a forked child must not share with its parent."""

    def close(self) -> None:
        """Release connections and files."""


class SessionStoreUnavailable(RuntimeError):
    """The shared book cannot be used right now (Redis down or refusing writes): the turn waits and is retried."""


def part_metadata(metadata: dict[str, str], part: int) -> dict[str, str]:
    """A part's thread metadata: the fixed keys, and which part it is after the first."""
    return {**metadata, "session_part": str(part)} if part > 1 else dict(metadata)


@dataclass(slots=True)
class _Session:
    touched: float
    part: int
    turns: int
    messages: int
    metadata: dict[str, str]
    answer: int  # index of the latest answer in the part's thread, -1 if none
    placed: OrderedDict[str, Placement]  # recent turn ids -> where they went


class MemorySessions:
    """Sessions in memory, bounded in sessions and idle time: about 5 KB per session whatever its length
    (its counters, fixed metadata and `RECENT_TURNS` turn ids), so about 5 MB at the default bounds."""

    shared = False

    def __init__(self, max_sessions: int = 1_000, max_turns: int = 200, ttl_s: float = 86_400.0) -> None:
        self.max_sessions, self.max_turns, self.ttl_s = max_sessions, max_turns, ttl_s
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        """A new process: a new scope and an empty book (the parent's turns are the parent's thread)."""
        self.scope = secrets.token_hex(6)
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._next_part: OrderedDict[str, int] = OrderedDict()  # forgotten sessions continue in a new part

    def place_all(self, turns: list[Turn]) -> list[Placement]:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            return [self._place(turn, now) for turn in turns]

    def _place(self, turn: Turn, now: float) -> Placement:
        state = self._sessions.pop(turn.session, None)
        if state is None:
            part = self._next_part.pop(turn.session, 1)
            state = _Session(now, part, 0, 0, part_metadata(turn.metadata, part), -1, OrderedDict())
        self._sessions[turn.session] = state
        state.touched = now
        known = state.placed.get(turn.turn_id)
        if known is not None:
            return Placement(known.thread_id, known.metadata, known.offset, repeat=True)
        if state.turns >= self.max_turns:
            state.part += 1
            state.turns = state.messages = 0
            state.answer = -1
            state.metadata = part_metadata(turn.metadata, state.part)
        placement = Placement(session_thread_id(turn.session, state.part, self.scope), state.metadata, state.messages)
        state.turns += 1
        state.messages += turn.messages
        if turn.answer >= 0:
            state.answer = placement.offset + turn.answer
        state.placed[turn.turn_id] = placement
        if len(state.placed) > RECENT_TURNS:
            state.placed.popitem(last=False)
        while len(self._sessions) > self.max_sessions:
            self._forget(*self._sessions.popitem(last=False))
        return placement

    def latest_answer(self, session: str) -> tuple[str, int] | None:
        with self._lock:
            state = self._sessions.get(session)
            if state is None or state.answer < 0:
                return None
            return session_thread_id(session, state.part, self.scope), state.answer

    def close(self) -> None:
        pass

    def _expire(self, now: float) -> None:
        while self._sessions:
            state = next(iter(self._sessions.values()))
            if now - state.touched <= self.ttl_s:
                break
            self._forget(*self._sessions.popitem(last=False))

    def _forget(self, session: str, state: _Session) -> None:
        self._next_part[session] = state.part + 1
        while len(self._next_part) > 100 * self.max_sessions:
            self._next_part.popitem(last=False)
