"""OTLP trace export requests (protobuf or OTLP/JSON) -> `SpanRecord`s, for the OTLP receiver.

Pure functions, no I/O: the receiver hands over the request body, gets records back plus one reason per
rejected span, and answers full or partial success. Malformed bodies raise `OtlpDecodeError` (a
`ValueError`), which the receiver answers with 400 / INVALID_ARGUMENT; invalid spans never fail a batch.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ..model import AttributeValue, SpanEvent, SpanRecord, SpanStatus
from .otlp_limits import RequestLimits, check_json_data, check_json_text, rebuilt_request_type


class OtlpDecodeError(ValueError):
    """The body is not a valid OTLP trace export request; the message says what is wrong and where."""


# --- protobuf ----------------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary OTLP body (`application/x-protobuf`, or a gRPC message).

    A body cut inside a message raises. A body cut exactly between two top-level `ResourceSpans` parses
    as a valid, shorter request: protobuf has no end marker, so only the transport (Content-Length, gRPC
    framing) can catch that. Strings with invalid UTF-8 raise too (proto3 `string` fields must be UTF-8).
    """
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        # proto3 strings must be UTF-8, and one bad attribute would cost the whole batch: read the
        # body again with every string field as bytes, repair the text, and keep every span.
        repaired = _parse_repairing_utf8(body)
        if repaired is None:
            raise OtlpDecodeError(f"malformed protobuf: {_short_protobuf_error(error)}") from None
        return repaired
    return request


def _parse_repairing_utf8(body: bytes) -> ExportTraceServiceRequest | None:
    """The request with invalid UTF-8 replaced by U+FFFD, or None when the body is malformed otherwise."""
    lenient_class, text_fields = _lenient_request_class()
    lenient = lenient_class()
    try:
        lenient.ParseFromString(body)
    except DecodeError:
        return None
    _repair_text(lenient, text_fields)
    return ExportTraceServiceRequest.FromString(lenient.SerializeToString())


@functools.cache
def _lenient_request_class() -> tuple[type[Message], frozenset[str]]:
    """`ExportTraceServiceRequest` with `string` fields typed `bytes` (the same wire format), and the full
    names of the fields so changed."""
    text_fields: set[str] = set()

    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        for message in proto.message_type:
            _strings_to_bytes(message, f"{proto.package}.{message.name}", text_fields)

    request = rebuilt_request_type(edit)
    return message_factory.GetMessageClass(request), frozenset(text_fields)


def _strings_to_bytes(message: descriptor_pb2.DescriptorProto, full_name: str, changed: set[str]) -> None:
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            changed.add(f"{full_name}.{field.name}")
    for nested in message.nested_type:
        _strings_to_bytes(nested, f"{full_name}.{nested.name}", changed)


def _repair_text(message: Message, text_fields: frozenset[str]) -> None:
    for field, value in message.ListFields():
        if field.full_name in text_fields:
            fixed = [v.decode("utf-8", "replace").encode("utf-8") for v in (value if _repeated(field) else [value])]
            if _repeated(field):
                del value[:]
                value.extend(fixed)
            else:
                setattr(message, field.name, fixed[0])
        elif field.message_type is not None:
            for item in value if _repeated(field) else [value]:
                _repair_text(item, text_fields)


def _repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 6+; older releases only have `label`
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _short_protobuf_error(error: DecodeError) -> str:
    # upb says "Error parsing message with type '<full name>': <reason>"; the reason is what matters.
    text = str(error)
    return text.rsplit("': ", 1)[-1] if "': " in text else text


# --- OTLP/JSON ---------------------------------------------------------------------------------------

# The OTLP/JSON deviations from the proto3 JSON mapping that `json_format` does not know: ids are hex,
# not base64. These are the id fields of the trace signal, by message, in both key spellings.
_SPAN_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
M = TypeVar("M", bound=Message)
_LINK_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_PARSE_PREFIX = re.compile(r"(?:Failed to parse \w+ field: )+")


def decode_json(body: bytes, limits: RequestLimits | None = None) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON body (`application/json`) as the OTLP specification maps it.

    Ids are case-insensitive hex (protobuf's own JSON mapping would read them as base64 and silently give
    wrong bytes, so they are converted here first); enums may be integers or names; 64-bit integers may
    be strings or numbers; unknown fields are ignored; snake_case keys are accepted as well as
    lowerCamelCase. Ids that are valid hex but of the wrong length are kept: `records_from_request`
    rejects those spans alone, as it does for protobuf. Invalid UTF-8 and lone surrogates (`\\udc00`)
    become U+FFFD, as for protobuf: one bad character must not cost the batch. Past `limits`,
    `RequestTooLarge` is raised before the costly steps.
    """
    data = load_json_body(body, limits or RequestLimits())
    _hex_ids_to_base64(data)
    return parse_json_message(data, ExportTraceServiceRequest())


def load_json_body(body: bytes, limits: RequestLimits) -> dict[str, Any]:
    """An OTLP/JSON body (traces or logs) as a dict, within `limits`: invalid UTF-8 and lone surrogates as
    U+FFFD, a byte order mark skipped; `OtlpDecodeError` for what is not a JSON object."""
    text = body.decode("utf-8", "replace")
    if text.startswith("\ufeff"):  # a byte order mark, which JSON parsers may ignore (RFC 8259)
        text = text[1:]
    check_json_text(text, limits)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise OtlpDecodeError(f"JSON body: invalid JSON: {error}") from None
    except RecursionError:
        raise OtlpDecodeError("JSON body: invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise OtlpDecodeError(f"JSON body: expected an object, got {type(data).__name__}")
    check_json_data(data, limits)
    if _SURROGATE_ESCAPE.search(text):
        data = _repair_surrogates(data)
    return data


def parse_json_message(data: dict[str, Any], message: M) -> M:
    """`data` (its ids already base64) into `message`, unknown fields ignored; `OtlpDecodeError` otherwise."""
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        reason = _PARSE_PREFIX.sub("", str(error)).rstrip(".") or type(error).__name__
        raise OtlpDecodeError(f"JSON body: {reason}") from None
    return message


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _repair_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate (which `json.loads` lets through, UTF-8 cannot hold) as U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_repair_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_repair_surrogates(key): _repair_surrogates(item) for key, item in value.items()}
    return value


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """Rewrite the hex ids in place as base64, the form `json_format` reads for `bytes` fields.

    Anything not shaped as expected is left alone for `json_format` to report with its own message.
    """
    for i, resource_spans in _items(data, "resourceSpans", "resource_spans"):
        for j, scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for k, span in _items(scope_spans, "spans", "spans"):
                path = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                _rewrite_ids(span, _SPAN_ID_KEYS, path)
                for n, link in _items(span, "links", "links"):
                    _rewrite_ids(link, _LINK_ID_KEYS, f"{path}.links[{n}]")


def _items(parent: Any, camel: str, snake: str) -> Iterable[tuple[int, dict[str, Any]]]:
    if not isinstance(parent, dict):
        return ()
    children = parent.get(camel, parent.get(snake))
    if not isinstance(children, list):
        return ()
    return ((index, child) for index, child in enumerate(children) if isinstance(child, dict))


def _rewrite_ids(message: dict[str, Any], keys: tuple[str, ...], path: str) -> None:
    for key in keys:
        if key not in message:
            continue
        value = message[key]
        if value is None:  # JSON null: the field's default, as json_format treats it
            continue
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            size = 32 if key.startswith("trace") else 16
            raise OtlpDecodeError(f"JSON body: {path}.{key}: expected {size} hex characters, got {value!r:.80}")
        message[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


# --- SpanRecords -------------------------------------------------------------------------------------

# indexed by opentelemetry.proto.trace.v1.Status.StatusCode
_STATUS = (SpanStatus.UNSET, SpanStatus.OK, SpanStatus.ERROR)
_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def records_from_request(request: ExportTraceServiceRequest) -> tuple[list[SpanRecord], list[str]]:
    """Every valid span as a `SpanRecord`, and one reason per span skipped as invalid.

    A span is invalid when its trace id is not 16 bytes or all zeros, its span id not 8 bytes or all
    zeros, or its parent span id neither empty nor 8 bytes (an all-zero parent means no parent). The
    receiver reports the number of reasons as `rejected_spans` in a partial success.
    """
    records: list[SpanRecord] = []
    rejected: list[str] = []
    for i, resource_spans in enumerate(request.resource_spans):
        # One read-only mapping shared by the resource's spans, like the SDK's `Resource.attributes`.
        resource = MappingProxyType(_attributes(resource_spans.resource.attributes))
        for j, scope_spans in enumerate(resource_spans.scope_spans):
            for k, span in enumerate(scope_spans.spans):
                trace_id = span.trace_id
                span_id = span.span_id
                parent_id = span.parent_span_id
                problem = _id_problem(trace_id, span_id, parent_id)
                if problem:
                    rejected.append(f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}] ({span.name!r}): {problem}")
                    continue
                status = span.status
                code = status.code
                start_ns = span.start_time_unix_nano
                events = span.events
                records.append(
                    SpanRecord(
                        trace_id=int.from_bytes(trace_id, "big"),
                        span_id=int.from_bytes(span_id, "big"),
                        parent_id=int.from_bytes(parent_id, "big") or None,  # empty or all zeros: a root
                        name=span.name,
                        start_ns=start_ns,
                        end_ns=span.end_time_unix_nano or start_ns,
                        attributes=_attributes(span.attributes),
                        events=tuple(
                            [
                                SpanEvent(event.name, event.time_unix_nano, _attributes(event.attributes))
                                for event in events
                            ]
                        )
                        if events
                        else (),
                        status_code=_STATUS[code] if 0 <= code < 3 else SpanStatus.UNSET,
                        status_message=status.message,
                        resource=resource,
                    )
                )
    return records, rejected


def _id_problem(trace_id: bytes, span_id: bytes, parent_id: bytes) -> str:
    if len(trace_id) != 16:
        return f"trace id is {len(trace_id)} bytes, expected 16"
    if trace_id == _ZERO_TRACE_ID:
        return "trace id is all zeros"
    if len(span_id) != 8:
        return f"span id is {len(span_id)} bytes, expected 8"
    if span_id == _ZERO_SPAN_ID:
        return "span id is all zeros"
    if parent_id and len(parent_id) != 8:
        return f"parent span id is {len(parent_id)} bytes, expected 8 or none"
    return ""


def _attributes(key_values: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    """`KeyValue`s as the SDK holds attributes. The hot path: a non-empty string, the common case, costs
    one read; other kinds one `WhichOneof`. An empty `AnyValue` is left out (the SDK never sets one).
    """
    out: dict[str, AttributeValue] = {}
    for key_value in key_values:
        value = key_value.value
        text = value.string_value
        if text:
            out[key_value.key] = text
        else:
            kind = value.WhichOneof("value")
            if kind in _SCALARS:
                out[key_value.key] = getattr(value, kind)
            elif kind == "array_value":
                out[key_value.key] = tuple([_any_value(item) for item in value.array_value.values])
            elif kind is not None:
                out[key_value.key] = _any_value(value)
    return out


def _any_value(value: AnyValue) -> AttributeValue:
    """One `AnyValue`: arrays become tuples (as SDK attributes), kvlists dicts, bytes repaired UTF-8."""
    kind = value.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind == "array_value":
        return tuple([_any_value(item) for item in value.array_value.values])
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.decode("utf-8", "replace")
    return None  # an empty AnyValue: OTLP's null, which arrays may hold
