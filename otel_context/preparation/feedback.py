"""Where the last answer of a recent run is, for ratings that come after its thread was sent.

Feedback given later (a span naming a trace or a thread id) and evaluations recorded later (log records
naming a trace and its root span) rate an answer with a PATCH at its index in the appended thread. This
remembers, for the last runs sent, that index by trace, by "trace/root span" and by the run's own thread
id, and whose word rated it: the user's own feedback is never overwritten by an evaluator's.
Session feedback is looked up in the session store instead (`SessionStore.latest_answer`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..conversion.evaluations import Evaluation, RatingRule, evaluation_rating
from .appends import Append

Answer = tuple[str, int]  # (thread id, index of the message a rating applies to)


class RecentAnswers:
    """Bounded and thread-safe: the oldest entries go first."""

    def __init__(self, max_keys: int = 30_000, max_rated: int = 10_000) -> None:
        self._max_keys = max_keys
        self._max_rated = max_rated
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, Answer] = OrderedDict()  # trace, "trace/root span" or thread id
        self._user_rated: OrderedDict[Answer, None] = OrderedDict()
        # the rating evaluations gave the others, with the evaluation records that came after it was sent
        self._judged: OrderedDict[Answer, tuple[int | None, list[Evaluation]]] = OrderedDict()

    def remember(self, append: Append) -> None:
        """Where this run's answer went (a standalone run's also by its thread id), and whose rating it has."""
        run, sent = append.run, append.sent
        self._remember(run.trace_id, (sent.id, append.answer))
        if append.session is None:
            self._remember(sent.id, (sent.id, append.answer))
        key = f"{run.trace_id}/{run.metadata.get('span_id', '')}"  # evaluation records name the root span
        with self._lock:
            found = self._answers.get(run.trace_id)
            if found is None:
                return
            self._keep(key, found)
            if "feedback_rating" in run.metadata:
                self._rated(self._user_rated, found, None)
            elif "eval_rating" in run.metadata:
                self._rated(self._judged, found, (int(run.metadata["eval_rating"]), []))

    def __len__(self) -> int:
        """Keys held (at most `max_keys`)."""
        return len(self._answers)

    def find(self, key: str) -> Answer | None:
        """The answer a trace id or a thread id names."""
        with self._lock:
            return self._answers.get(key)

    def rated_by_user(self, answer: Answer) -> None:
        """The user's word: never overwritten by an evaluator's later."""
        with self._lock:
            self._rated(self._user_rated, answer, None)

    def judge(
        self, trace: str, root_span: str | None, evaluation: Evaluation, rules: tuple[RatingRule, ...]
    ) -> tuple[Answer | None, int | None]:
        """An evaluation of a run already sent: (its answer, or None when no recent run matches; the rating to
        PATCH, or None when nothing changes: the user rated it, or the evaluators' lowest rating is not lower)."""
        with self._lock:
            found = self._answers.get(f"{trace}/{root_span}") if root_span is not None else None
            found = found or self._answers.get(trace)
            if found is None or found in self._user_rated:
                return found, None
            judged, later = self._judged.pop(found, (None, []))
            later.append(evaluation)
            self._rated(self._judged, found, (judged, later))
            rating = evaluation_rating(later, rules)
            if rating is None or (judged is not None and judged <= rating):
                return found, None
            self._judged[found] = (rating, later)
            return found, rating

    def _remember(self, key: str, answer: Answer) -> None:
        if not key:
            return
        with self._lock:
            self._keep(key, answer)

    def _keep(self, key: str, answer: Answer) -> None:
        """Under `_lock`: every key goes through here, so the bound holds whatever the key."""
        self._answers[key] = answer
        while len(self._answers) > self._max_keys:
            self._answers.popitem(last=False)

    def _rated(self, table: OrderedDict, answer: Answer, value: object) -> None:  # type: ignore[type-arg]
        """Under `_lock`."""
        table[answer] = value
        if len(table) > self._max_rated:
            table.popitem(last=False)
