"""User feedback carried by spans: a rating of -1, 0 or 1 for the answer of a run.

Keys read (span attributes, or attributes of a span event named `context.feedback` or `feedback`):
`context.feedback.rating`, `feedback.rating`, `feedback.score` and `langsmith.feedback.score`
(LangSmith-style scores: any number, its sign is the rating; `true`/`false` are 1/-1). Feedback given
later, in a trace of its own, names what it rates with `context.feedback.thread_id`,
`context.feedback.session_id` or `context.feedback.trace_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import SpanRecord

RATING_KEYS = ("context.feedback.rating", "feedback.rating", "feedback.score", "langsmith.feedback.score")
EVENT_NAMES = frozenset({"context.feedback", "feedback"})
EVENT_KEYS = ("rating", "score", *RATING_KEYS)
THREAD_TARGET = "context.feedback.thread_id"
SESSION_TARGET = "context.feedback.session_id"
TRACE_TARGET = "context.feedback.trace_id"
TARGET_KEYS = (THREAD_TARGET, SESSION_TARGET, TRACE_TARGET)


def as_rating(value: Any) -> int | None:
    if isinstance(value, bool):
        return 1 if value else -1
    if isinstance(value, str):
        value = value.strip().lower()
        if value in ("true", "up", "thumbs_up", "good"):
            return 1
        if value in ("false", "down", "thumbs_down", "bad"):
            return -1
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return (number > 0) - (number < 0)


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in mapping:
            rating = as_rating(mapping[key])
            if rating is not None:
                return rating
    return None


def span_rating(span: SpanRecord) -> int | None:
    """The last rating a span carries, from its attributes or its feedback events."""
    rating = _first(span.attributes, RATING_KEYS)
    for event in span.events:
        if event.name in EVENT_NAMES:
            from_event = _first(event.attributes, EVENT_KEYS)
            rating = from_event if from_event is not None else rating
    return rating


def feedback_target(span: SpanRecord) -> tuple[str, str] | None:
    """(key, value) naming what a stand-alone feedback span rates, e.g. ("context.feedback.session_id", "s-1")."""
    for key in TARGET_KEYS:
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return key, value
    return None
