"""OTLP logs export requests (protobuf or OTLP/JSON) -> `LogEvent`s, for the receiver's `/v1/logs`.

Only events are read: log records that carry an event name (the `event_name` field, or an `event.name`
attribute as the Logs API wrote it before the field existed), such as the GenAI `gen_ai.evaluation.result`
now that span events are deprecated; plain log lines are skipped. Decoding has the bounds, the UTF-8 repair
and the errors of trace requests (`otlp.py`, `otlp_limits.py`): log records count against `max_spans`.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ..model import LogEvent
from .otlp import (
    _HEX,
    OtlpDecodeError,
    _any_value,
    _attributes,
    _items,
    _repair_text,
    _short_protobuf_error,
    _strings_to_bytes,
    load_json_body,
    parse_json_message,
)
from .otlp_limits import RequestLimits, check_logs_protobuf, rebuilt_request_type

EVENT_NAME = "event.name"  # the attribute the Logs API's events carried their name in before `event_name`
_LOG_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id")


def decode_logs_protobuf(body: bytes, limits: RequestLimits | None = None) -> ExportLogsServiceRequest:
    """A binary OTLP logs body (or gRPC message), after the work bound; invalid UTF-8 repaired."""
    check_logs_protobuf(body, limits or RequestLimits())
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        lenient_class, text_fields = _lenient_logs_class()
        lenient = lenient_class()
        try:
            lenient.ParseFromString(body)
        except DecodeError:
            raise OtlpDecodeError(f"malformed protobuf: {_short_protobuf_error(error)}") from None
        _repair_text(lenient, text_fields)
        request = ExportLogsServiceRequest.FromString(lenient.SerializeToString())
    return request


@functools.cache
def _lenient_logs_class() -> tuple[type[Message], frozenset[str]]:
    """`ExportLogsServiceRequest` with `string` fields typed `bytes`, and the names of the fields so changed."""
    text_fields: set[str] = set()

    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        for message in proto.message_type:
            _strings_to_bytes(message, f"{proto.package}.{message.name}", text_fields)

    request = rebuilt_request_type(edit, ExportLogsServiceRequest.DESCRIPTOR)
    return message_factory.GetMessageClass(request), frozenset(text_fields)


def decode_logs_json(body: bytes, limits: RequestLimits | None = None) -> ExportLogsServiceRequest:
    """An OTLP/JSON logs body, read as `otlp.decode_json` reads trace bodies (hex ids, both key spellings,
    enums as names or numbers, unknown fields ignored, bad text repaired), within the same bounds."""
    data = load_json_body(body, limits or RequestLimits())
    for i, resource_logs in _items(data, "resourceLogs", "resource_logs"):
        for j, scope_logs in _items(resource_logs, "scopeLogs", "scope_logs"):
            for k, record in _items(scope_logs, "logRecords", "log_records"):
                _hex_ids(record, f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]")
    return parse_json_message(data, ExportLogsServiceRequest())


def _hex_ids(record: dict[str, Any], path: str) -> None:
    for key in _LOG_ID_KEYS:
        value = record.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            size = 32 if key.startswith("trace") else 16
            raise OtlpDecodeError(f"JSON body: {path}.{key}: expected {size} hex characters, got {value!r:.80}")
        record[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def events_from_logs(request: ExportLogsServiceRequest) -> tuple[list[LogEvent], list[str]]:
    """The log records that are events, as `LogEvent`s, and one reason per record refused as invalid (a trace id
    that is not 16 bytes, a span id that is not 8): the receiver answers those in a partial success.

    An event's attributes are its record's; a record whose body is a map and whose attributes hold only its
    name (how some emitters write an event's payload) has the body's keys as attributes. An all-zero or
    empty trace id means the event was emitted outside any span.
    """
    events: list[LogEvent] = []
    rejected: list[str] = []
    for i, resource_logs in enumerate(request.resource_logs):
        for j, scope_logs in enumerate(resource_logs.scope_logs):
            for k, record in enumerate(scope_logs.log_records):
                trace_id, span_id = record.trace_id, record.span_id
                problem = ""
                if trace_id and len(trace_id) != 16:
                    problem = f"trace id is {len(trace_id)} bytes, expected 16 or none"
                elif span_id and len(span_id) != 8:
                    problem = f"span id is {len(span_id)} bytes, expected 8 or none"
                if problem:
                    rejected.append(f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]: {problem}")
                    continue
                attributes = _attributes(record.attributes)
                name = record.event_name or attributes.pop(EVENT_NAME, "")
                if not isinstance(name, str) or not name:
                    continue  # a plain log line, no event
                if record.body.WhichOneof("value") == "kvlist_value":
                    body = _any_value(record.body)
                    if isinstance(body, dict):
                        attributes = {**body, **attributes}
                trace = int.from_bytes(trace_id, "big") or None
                span = int.from_bytes(span_id, "big") or None
                events.append(
                    LogEvent(
                        name=name,
                        timestamp_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        attributes=attributes,
                        trace_id=trace,
                        span_id=span if trace is not None else None,
                    )
                )
    return events, rejected
