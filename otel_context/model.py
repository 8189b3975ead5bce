"""The one internal model every reader produces and every writer consumes.

Span readers (OTel SDK spans, OTLP protobuf/JSON, the SDK's JSON dump) turn their input into
`SpanRecord`s; the conversion core turns assembled traces of `SpanRecord`s into `ConversationThread`s;
delivery only ever sees `ConversationThread`s. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

AttributeValue = Any  # str | bool | int | float | sequences of those (OTel attribute types)
# The message metadata a run's messages carry so a read-back can find them: its trace and root span ids.
SEGMENT_KEYS = ("trace_id", "span_id")


class SpanStatus(str, enum.Enum):
    """A span's status code, by the names OTel gives them (also the text of `ReadableSpan.to_json()`)."""

    UNSET = "UNSET"
    OK = "OK"
    ERROR = "ERROR"

    def __str__(self) -> str:
        return self.value  # `ERROR`, also in f-strings (where Python 3.11+ would write `SpanStatus.ERROR`)


@dataclass(slots=True, frozen=True)
class SpanEvent:
    """A span event (an `exception`, a GenAI message event, a feedback event)."""

    name: str
    timestamp_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class LogEvent:
    """An event recorded as a log record through the Logs API (`gen_ai.evaluation.result`, now that span events
    are deprecated), with the span context it was emitted in: the trace and span it is about, when known."""

    name: str
    timestamp_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    trace_id: int | None = None
    span_id: int | None = None


@dataclass(slots=True)
class SpanRecord:
    """A finished span, reduced to what conversion reads: ids, timing, status, attributes, events."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    events: tuple[SpanEvent, ...] = ()
    status_code: SpanStatus = SpanStatus.UNSET
    status_message: str = ""
    resource: Mapping[str, AttributeValue] = field(default_factory=dict)

    @property
    def trace_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def span_hex(self) -> str:
        return format(self.span_id, "016x")


@dataclass(slots=True)
class Message:
    """One Context message. `role` is system, user or assistant; `type` is message, tool or event."""

    role: str
    text: str
    type: str = "message"
    timestamp_ns: int | None = None
    name: str | None = None
    input: Any = None
    observation: str | None = None
    metadata: dict[str, str] | None = None
    rating: int | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Message:
        """A message stored as wire JSON (a session's earlier turns)."""
        stamp = data.get("event_timestamp")
        return cls(
            role=data.get("role"),  # type: ignore[arg-type]
            text=data.get("message", ""),
            type=data.get("type", "message"),
            timestamp_ns=parse_iso8601(stamp) if stamp else None,
            name=data.get("name"),
            input=data.get("input"),
            observation=data.get("observation"),
            metadata=data.get("metadata"),
            rating=data.get("rating"),
        )

    def with_metadata(self, extra: dict[str, str]) -> Message:
        """A copy whose metadata also holds `extra`: `dataclasses.replace` at 0.4 of its CPU (every message
        of every run is marked this way before its upload)."""
        return Message(
            role=self.role,
            text=self.text,
            type=self.type,
            timestamp_ns=self.timestamp_ns,
            name=self.name,
            input=self.input,
            observation=self.observation,
            metadata={**(self.metadata or {}), **extra},
            rating=self.rating,
        )

    def to_wire(self) -> dict[str, Any]:
        """The JSON object `context-python` sends for a `Message`."""
        out: dict[str, Any] = {"role": self.role, "message": self.text, "type": self.type}
        if self.timestamp_ns is not None:
            out["event_timestamp"] = iso8601(self.timestamp_ns)
        for key in ("name", "input", "observation", "metadata", "rating"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(slots=True)
class ConversationThread:
    """A Context thread: stable id, ordered messages, string-to-string metadata."""

    id: str
    messages: list[Message]
    metadata: dict[str, str]
    trace_id: str = ""
    start_ns: int = 0
    end_ns: int = 0
    name: str = ""  # the workflow (chain) or span name, for include/exclude filters
    segment: str = ""  # what its messages carry to be found in a read-back (`preparation/segments.py`)

    def to_wire(self) -> dict[str, Any]:
        """The `conversation` object of `POST /api/v1/log/conversation/thread`."""
        return {
            "id": self.id,
            "messages": [m.to_wire() for m in self.messages],
            "metadata": dict(self.metadata),
        }


def iso8601(timestamp_ns: int, timespec: str = "milliseconds") -> str:
    """Nanoseconds since the epoch as an ISO 8601 UTC string; milliseconds, as Context stores timestamps.

    The same text as `datetime.fromtimestamp(timestamp_ns / 1e9, tz=utc).isoformat(timespec=...)` with
    `Z` for `+00:00` (the float's microseconds rounded half to even, as `fromtimestamp` does), with the
    date and time of day formatted once per second: every message of a thread has a timestamp.
    """
    seconds = timestamp_ns / 1e9
    whole = math.floor(seconds)
    micros = round((seconds - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if timespec == "milliseconds":
        return f"{_second_text(whole)}.{micros // 1000:03d}Z"
    if timespec == "microseconds":
        return f"{_second_text(whole)}.{micros:06d}Z"
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


@functools.lru_cache(maxsize=256)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def parse_iso8601(text: str) -> int:
    """The inverse of `iso8601`, for timestamps read back from storage and span dumps (naive means UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
