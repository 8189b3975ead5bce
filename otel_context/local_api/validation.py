"""Checks of the bodies POSTed to the local API, with errors that say exactly what is wrong and where.

The rules follow the `context-python` models (`Thread`, `Conversation`, `Message`, `ThreadMessage`) plus what
Context itself insists on: metadata values are strings. A failure here is what a 400 from Context would be, so
a writer that passes locally does not get rejected in production for a shape mistake.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from typing import Any

ROLES = ("system", "assistant", "user")
TYPES = ("message", "tool", "event")
RATINGS = (-1, 0, 1)
TEXT_FIELDS = ("message", "name", "thought", "observation")
MAX_ID_BYTES = 1024  # a thread id's UTF-8, percent-encoded (3 characters a byte), fits a GET's 8190-byte line
DOT_SEGMENTS = (".", "..")  # resolved away by HTTP clients before the request is sent


class ValidationError(ValueError):
    """A body the real API would refuse; the message starts with the JSON path of the culprit."""


def parse_conversation_body(body: Any, *, require_messages: bool = True) -> dict[str, Any]:
    """Validate `{"conversation": {...}}` and return the conversation with timestamps in canonical UTC form."""
    if not isinstance(body, dict):
        raise ValidationError(f"body: must be a JSON object with a 'conversation' key, got {_kind(body)}")
    if "conversation" not in body:
        raise ValidationError("body: missing 'conversation'")
    return parse_conversation(body["conversation"], "conversation", require_messages=require_messages)


def parse_conversation(conv: Any, where: str, *, require_messages: bool = True) -> dict[str, Any]:
    """Validate a `Thread`/`Conversation` object; unknown keys are kept, as the SDK never sends any."""
    _require_object(conv, where)
    out = dict(conv)
    if conv.get("id") is not None:
        check_thread_id(conv["id"], f"{where}.id")
    if conv.get("feedback") is not None:
        _require_str(conv["feedback"], f"{where}.feedback")
    if conv.get("metadata") is not None:
        check_metadata(conv["metadata"], f"{where}.metadata")
    out["messages"] = parse_messages(conv.get("messages"), f"{where}.messages", required=require_messages)
    return out


def parse_messages(messages: Any, where: str, *, required: bool = True) -> list[dict[str, Any]]:
    if messages is None and not required:
        return []
    if not isinstance(messages, list):
        raise ValidationError(f"{where}: must be a list of messages, got {_kind(messages)}")
    if not messages:
        raise ValidationError(f"{where}: must not be empty")
    return [parse_message(m, f"{where}[{i}]") for i, m in enumerate(messages)]


def parse_message(msg: Any, where: str) -> dict[str, Any]:
    """One `Message`: `role` is required for type message only (tool and event steps may lack it)."""
    _require_object(msg, where)
    out = dict(msg)
    kind = msg.get("type")
    if kind is not None:
        _require_choice(kind, TYPES, f"{where}.type")
    role = msg.get("role")
    if role is None and kind in (None, "message"):
        raise ValidationError(f"{where}.role: required for a message of type 'message' (one of {', '.join(ROLES)})")
    if role is not None:
        _require_choice(role, ROLES, f"{where}.role")
    for key in TEXT_FIELDS:
        if msg.get(key) is not None:
            _require_str(msg[key], f"{where}.{key}")
    if msg.get("rating") is not None:
        check_rating(msg["rating"], f"{where}.rating")
    if msg.get("metadata") is not None:
        check_metadata(msg["metadata"], f"{where}.metadata")
    if msg.get("event_timestamp") is not None:
        out["event_timestamp"] = canonical_timestamp(msg["event_timestamp"], f"{where}.event_timestamp")
    return out


def parse_thread_updates(body: Any) -> list[dict[str, Any]]:
    """The PATCH body: a list of `ThreadMessage` (`{"rating": ...}`), item i updating message i."""
    if not isinstance(body, list):
        raise ValidationError(f"body: must be a list of thread message updates, got {_kind(body)}")
    for i, item in enumerate(body):
        _require_object(item, f"body[{i}]")
        if item.get("rating") is not None:
            check_rating(item["rating"], f"body[{i}].rating")
    return [dict(item) for item in body]


def check_thread_id(thread_id: Any, where: str) -> None:
    """An id that `GET /api/v1/conversations/{id}` can serve back, so a thread stored is a thread readable.

    At most `MAX_ID_BYTES` bytes of UTF-8, no control character (the route ends at a line feed, and a
    CR or NUL in an id only ever breaks whatever prints it), and not `.` or `..`.
    """
    _require_nonempty_str(thread_id, where)
    try:
        size = len(thread_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{where}: not valid Unicode (it holds a lone surrogate)") from None
    if size > MAX_ID_BYTES:
        raise ValidationError(f"{where}: {size} bytes of UTF-8; an id may have at most {MAX_ID_BYTES}")
    control = next((c for c in thread_id if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise ValidationError(f"{where}: holds the control character U+{ord(control):04X}; an id may not")
    if thread_id in DOT_SEGMENTS:
        raise ValidationError(f"{where}: {thread_id!r} cannot be read back (clients resolve it as a path segment)")


def check_metadata(metadata: Any, where: str) -> None:
    """Context stores metadata as string to string; numbers must be rendered by the writer."""
    _require_object(metadata, where)
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ValidationError(f"{where}.{key}: metadata values must be strings, got {_kind(value)} {value!r}")


def check_rating(rating: Any, where: str) -> None:
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        raise ValidationError(f"{where}: must be one of -1, 0, 1, got {rating!r}")


def canonical_timestamp(value: Any, where: str) -> str:
    """ISO 8601 in, `2026-01-01T00:00:00.000Z` out (what the SDK sends); naive times are taken as UTC."""
    if not isinstance(value, str):
        raise ValidationError(f"{where}: must be an ISO 8601 string, got {_kind(value)}")
    text = value.strip()
    if text.endswith(("Z", "z")):  # datetime.fromisoformat accepts a Z only from Python 3.11
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{where}: not an ISO 8601 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _require_object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: must be a JSON object, got {_kind(value)}")


def _require_str(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ValidationError(f"{where}: must be a string, got {_kind(value)}")


def _require_nonempty_str(value: Any, where: str) -> None:
    _require_str(value, where)
    if not value.strip():
        raise ValidationError(f"{where}: must not be empty")


def _require_choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ValidationError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")


def _kind(value: Any) -> str:
    """JSON's name for a Python value, for error messages a non-Python writer understands."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
