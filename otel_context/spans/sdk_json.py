"""`ReadableSpan.to_json()` dumps -> `SpanRecord`s: the format of captured fixtures and bug reports."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..model import SpanEvent, SpanRecord, SpanStatus, parse_iso8601


def _ns(text: str | None) -> int:
    return parse_iso8601(text) if text else 0


def _hex_id(text: str | None) -> int | None:
    return int(text, 16) if text else None


def _status(text: Any) -> SpanStatus:
    """`status_code` as `to_json()` writes it (`UNSET`, `OK`, `ERROR`); anything else says nothing: UNSET."""
    try:
        return SpanStatus(text)
    except ValueError:
        return SpanStatus.UNSET


def record_from_json(span: Mapping[str, Any]) -> SpanRecord:
    context = span.get("context") or {}
    status = span.get("status") or {}
    return SpanRecord(
        trace_id=_hex_id(context.get("trace_id")) or 0,
        span_id=_hex_id(context.get("span_id")) or 0,
        parent_id=_hex_id(span.get("parent_id")),
        name=span.get("name", ""),
        start_ns=_ns(span.get("start_time")),
        end_ns=_ns(span.get("end_time")),
        attributes=dict(span.get("attributes") or {}),
        events=tuple(
            SpanEvent(e.get("name", ""), _ns(e.get("timestamp")), dict(e.get("attributes") or {}))
            for e in span.get("events") or ()
        ),
        status_code=_status(status.get("status_code")),
        status_message=status.get("description") or "",
        resource=dict((span.get("resource") or {}).get("attributes") or {}),
    )


def records_from_json(spans: Iterable[Mapping[str, Any]]) -> list[SpanRecord]:
    return [record_from_json(span) for span in spans]


def load_json_file(path: str | Path) -> list[SpanRecord]:
    """A file holding one span or a list of spans as `to_json()` prints them."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return records_from_json(data if isinstance(data, list) else [data])
