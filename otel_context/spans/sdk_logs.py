"""SDK log records (what a `LogRecordExporter` is handed) -> `LogEvent`s: the events among them.

As for OTLP logs (`otlp_logs.py`): a record is an event when it has an event name (`event_name`, or an
`event.name` attribute); its attributes are the record's, or a map body's keys when it has no others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..model import LogEvent

EVENT_NAME = "event.name"


def events_from_sdk_logs(batch: Iterable[Any]) -> list[LogEvent]:
    """`ReadableLogRecord`s (SDK 1.39+; `LogData` before, alike: both hold a `log_record`) as `LogEvent`s."""
    events: list[LogEvent] = []
    for item in batch:
        record = getattr(item, "log_record", item)
        attributes = dict(getattr(record, "attributes", None) or {})
        name = getattr(record, "event_name", None) or attributes.pop(EVENT_NAME, None)
        if not isinstance(name, str) or not name:
            continue
        body = getattr(record, "body", None)
        if isinstance(body, Mapping):
            attributes = {**body, **attributes}
        trace_id = getattr(record, "trace_id", 0) or None
        span_id = getattr(record, "span_id", 0) or None
        events.append(
            LogEvent(
                name=name,
                timestamp_ns=getattr(record, "timestamp", None) or getattr(record, "observed_timestamp", None) or 0,
                attributes=attributes,
                trace_id=trace_id,
                span_id=span_id if trace_id is not None else None,
            )
        )
    return events
