"""What one POST appends: each run becomes a thread of its own, or a turn appended to its session's thread.

Session turns are placed in the session store all of a batch at once (`SessionStore.place_all`: one
transaction, one round trip). A store that cannot place them now (a strict shared store that fails)
keeps nothing from being sent: those runs wait here, bounded, and are placed first the next time
(`build` at the pipeline's next tick), in the order they came. Standalone runs never wait.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..model import ConversationThread
from .segments import session_append, standalone
from .sessions import SessionStore, SessionStoreUnavailable, Turn, session_of


@dataclass(frozen=True, slots=True)
class Append:
    """A run and what its POST appends."""

    run: ConversationThread  # the run as converted (selected and redacted)
    sent: ConversationThread  # the POST's thread: the run's own, or its session's with only this turn
    answer: int  # index, in the thread it is appended to, of the message a rating applies to
    session: str | None = None  # the session it is a turn of


@dataclass(slots=True)
class Built:
    """What `Appends.build` made of a batch, and what it counted."""

    appends: list[Append] = field(default_factory=list)
    repeated: int = 0  # turns the store had placed before (a replay, or a resend of the same run)
    dropped: int = 0  # waiting runs dropped: more than the bound waited for a store that never came back


class Appends:
    """Builds the appends of a batch of runs, holding the session turns the store cannot place yet.

    Thread-safe; `max_waiting` bounds the runs held (the oldest go first, counted in `Built.dropped`).
    """

    def __init__(self, sessions: SessionStore | None, max_waiting: int, *, repeats_recognised: bool = False) -> None:
        """`repeats_recognised`: a spool takes what is built and recognises a run it holds or delivered (its
        segment key), so a repeated turn (a replay after a crash, which may never have been sent) goes to
        it; without one nothing would recognise it, so a turn the store placed before is not appended again."""
        self._sessions = sessions
        self._repeats_recognised = repeats_recognised
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        self._waiting: list[ConversationThread] = []  # converted, not placed: the store failed

    @property
    def waiting(self) -> bool:
        """Whether runs wait for the session store (the sidecar pushes back meanwhile)."""
        with self._lock:
            return bool(self._waiting)

    def holds(self, trace_id: str) -> bool:
        """Whether a run of this trace (32 hex digits) waits here."""
        with self._lock:
            return any(run.trace_id == trace_id for run in self._waiting)

    def build(self, runs: list[ConversationThread]) -> Built:
        """The appends of the runs that wait (first) and of `runs`, in order; runs that cannot be placed
        now wait for the next call."""
        sessions = self._sessions
        kept = [(run, session_of(run) if sessions is not None else None) for run in runs]
        with self._lock:
            waiting, self._waiting = self._waiting, []
        kept[:0] = [(run, session_of(run)) for run in waiting]
        turns = [Turn.of(session, run) for run, session in kept if session is not None]
        built = Built()
        try:
            placements = iter(sessions.place_all(turns) if turns and sessions is not None else ())
        except SessionStoreUnavailable:
            with self._lock:
                self._waiting[:0] = [run for run, session in kept if session is not None]
                over = len(self._waiting) - self._max_waiting  # a store that never comes back
                if over > 0:
                    del self._waiting[:over]
                    built.dropped = over
            kept = [(run, None) for run, session in kept if session is None]
            placements = iter(())
        for run, session in kept:
            if session is None:
                sent = standalone(run)
                built.appends.append(Append(run, sent, last_answer(sent)))
            else:
                placement = next(placements)
                if placement.repeat:
                    built.repeated += 1
                    if not self._repeats_recognised:
                        continue
                sent = session_append(run, placement)
                built.appends.append(Append(run, sent, placement.offset + last_answer(sent), session))
        return built


def last_answer(thread: ConversationThread) -> int:
    """Index (in the run's own messages) of the message a rating applies to: the last answer, else the last
    message."""
    answers = [i for i, m in enumerate(thread.messages) if m.role == "assistant" and m.type == "message"]
    return answers[-1] if answers else len(thread.messages) - 1
