"""A work bound on OTLP trace (and logs) requests, checked before any Python (or upb) structure is built.

A byte bound is no work bound: 64 MiB of empty `ResourceSpans` (two bytes each) parse into 32 million
messages, which take upb 14 s and 2 GB before Python sees one of them. So the raw bytes are walked
first, in a loop that stops as soon as a budget runs out: its cost is bounded by the limits, not by the
body. A body too small to hold more messages than the limits allow anyway takes a shortcut in C when
it is the plain encoding every SDK writes (see `_fits_plainly`): the same verdict for a third of the CPU.
OTLP/JSON is bounded the same way by counting its structural characters (in C) before `json.loads`,
then its known containers before `json_format` builds the request.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# Messages that count against `max_spans`: a span, and the groups and records that wrap or hang off it; in a
# logs request, log records and their groups alike.
_SPAN_LIKE = frozenset(
    {
        "opentelemetry.proto.trace.v1.ResourceSpans",
        "opentelemetry.proto.trace.v1.ScopeSpans",
        "opentelemetry.proto.trace.v1.Span",
        "opentelemetry.proto.trace.v1.Span.Event",
        "opentelemetry.proto.trace.v1.Span.Link",
        "opentelemetry.proto.logs.v1.ResourceLogs",
        "opentelemetry.proto.logs.v1.ScopeLogs",
        "opentelemetry.proto.logs.v1.LogRecord",
    }
)
_SPANS, _ATTRIBUTES, _OTHER = 0, 1, 2
# Occurrences of singular or unknown fields one message may hold: a proto3 sender writes each once;
# without a bound, millions of repeats of one 2-byte field would cost the walk itself unbounded time.
MAX_OTHER_FIELDS = 256
# KeyValue and AnyValue can hold more messages only through array_value (tag 0x2a) or kvlist_value
# (0x32); bytes that contain neither tag byte, nor its overlong-varint form, need no walk.
_VALUE_TYPES = frozenset({"opentelemetry.proto.common.v1.KeyValue", "opentelemetry.proto.common.v1.AnyValue"})
_NESTED_TAG = re.compile(b"[\x2a\xaa\x32\xb2]")
MAX_DEPTH = 32  # nested AnyValue arrays and kvlists; upb's own limit is 100
_JSON_SPAN_KEYS = (
    *("resourceSpans", "resource_spans", "scopeSpans", "scope_spans", "spans", "events", "links"),
    *("resourceLogs", "resource_logs", "scopeLogs", "scope_logs", "logRecords", "log_records"),
)


class RequestTooLarge(ValueError):
    """The request exceeds a work limit; answered 413 / RESOURCE_EXHAUSTED."""


class MalformedWire(ValueError):
    """The protobuf wire format is broken; answered 400 / INVALID_ARGUMENT."""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per request: spans (ResourceSpans, ScopeSpans, events and links count as spans too), and
    attributes (every KeyValue, and every value of an array, count as one)."""

    max_spans: int = 65_536
    max_attributes: int = 524_288

    @property
    def max_json_values(self) -> int:
        """JSON values (counted as commas and containers) allowed before `json.loads`: an attribute in
        OTLP/JSON spends about four, a span more; the bound keeps a flood of `[]` under a few hundred MB."""
        return 4 * (self.max_spans + self.max_attributes)


class _Budget:
    __slots__ = ("attributes", "limits", "spans")

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.spans = limits.max_spans
        self.attributes = limits.max_attributes

    def spend(self, kind: int) -> None:
        if kind == _SPANS:
            self.spans -= 1
            if self.spans < 0:
                raise RequestTooLarge(f"request holds more than {self.limits.max_spans} spans (limit max_spans)")
        else:
            self.attributes -= 1
            if self.attributes < 0:
                raise RequestTooLarge(
                    f"request holds more than {self.limits.max_attributes} attributes (limit max_attributes)"
                )


# --- protobuf ----------------------------------------------------------------------------------------

_Schema = dict[int, tuple[str | None, int]]  # field number -> (message type to walk into, budget kind)


@functools.cache
def _schemas(request: Descriptor = ExportTraceServiceRequest.DESCRIPTOR) -> dict[str, _Schema]:
    """Every message type reachable from the request: which fields hold messages, and what they cost."""
    schemas: dict[str, _Schema] = {}

    def add(descriptor: Descriptor) -> None:
        if descriptor.full_name in schemas:
            return
        schema: _Schema = {}
        schemas[descriptor.full_name] = schema
        for field in descriptor.fields:
            child = field.message_type
            if _is_repeated(field):
                kind = _SPANS if child is not None and child.full_name in _SPAN_LIKE else _ATTRIBUTES
            else:
                kind = _OTHER
            schema[field.number] = (child.full_name if child is not None else None, kind)
            if child is not None:
                add(child)

    add(request)
    return schemas


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 6+; older releases only have `label`
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def check_protobuf(body: bytes, limits: RequestLimits) -> None:
    """Raise `RequestTooLarge` past a limit, `MalformedWire` on a broken wire format; else return.

    The walk touches each field tag once and stops at the first limit exceeded, so its cost is at most
    proportional to the limits (times `MAX_OTHER_FIELDS`), whatever the body's size. A body the walk
    would certainly let through is recognised in C first (`_fits_plainly`).
    """
    if _SHORTCUT.worth_trying(body, limits) and _SHORTCUT.taken(_fits_plainly(body, limits)):
        return
    _walk(body, 0, len(body), ExportTraceServiceRequest.DESCRIPTOR.full_name, 0, _Budget(limits), _schemas())


def check_logs_protobuf(body: bytes, limits: RequestLimits) -> None:
    """`check_protobuf` for an `ExportLogsServiceRequest` (log records count as spans): always walked."""
    request = ExportLogsServiceRequest.DESCRIPTOR
    _walk(body, 0, len(body), request.full_name, 0, _Budget(limits), _schemas(request))


def _walk(buf: bytes, pos: int, end: int, name: str, depth: int, budget: _Budget, schemas: dict[str, _Schema]) -> None:
    if depth > MAX_DEPTH:
        raise MalformedWire(f"messages nested deeper than {MAX_DEPTH}")
    fields = schemas[name]
    others = 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag & 0x80:
            tag, pos = _varint(buf, pos - 1)
        wire = tag & 7
        child, kind = fields.get(tag >> 3, (None, _OTHER))
        if wire == 2:
            length = buf[pos] if pos < end else 0x80
            if length & 0x80:
                length, pos = _varint(buf, pos)
            else:
                pos += 1
            start, pos = pos, pos + length
            if pos > end:
                raise MalformedWire("a length runs past the end of its message")
            if child is not None and (child not in _VALUE_TYPES or _NESTED_TAG.search(buf, start, pos)):
                _walk(buf, start, pos, child, depth + 1, budget, schemas)
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise MalformedWire(f"unsupported wire type {wire}")
        if kind == _OTHER:
            others += 1
            if others > MAX_OTHER_FIELDS:
                raise RequestTooLarge(f"a message repeats its fields more than {MAX_OTHER_FIELDS} times")
        else:
            budget.spend(kind)
    if pos > end:
        raise MalformedWire("a field runs past the end of its message")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = len(buf)
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedWire("truncated or overlong varint")


# --- the shortcut: upb decides for small, plainly encoded bodies ------------------------------------------

_VALUE_CONTAINERS = ("array_value", "kvlist_value")  # the only way to nest deeper than a fixed few levels


class _Odds:
    """Whether the shortcut is worth its cost (a third of a walk) for the next body.

    It is tried on every body until it misses `MISSES` times in a row (a sender whose bodies carry
    arrays, say), then on one body in `EVERY` only, until it pays off again: such a sender pays a few
    percent more than the walk alone, not a third. Counted without a lock: a race costs a try, never a
    verdict (the walk decides whenever the shortcut does not).
    """

    MISSES = 8
    EVERY = 16

    def __init__(self) -> None:
        self.misses = 0
        self.skipped = 0

    def worth_trying(self, body: bytes, limits: RequestLimits) -> bool:
        if len(body) > 2 * (limits.max_spans + limits.max_attributes):
            return False  # upb could be made to build more messages than the limits allow: walk first
        if self.misses < self.MISSES:
            return True
        self.skipped += 1
        return self.skipped % self.EVERY == 0

    def taken(self, fits: bool) -> bool:
        self.misses = 0 if fits else self.misses + 1
        return fits


_SHORTCUT = _Odds()


def _fits_plainly(body: bytes, limits: RequestLimits) -> bool:
    """True only where the walk would let `body` through; False means "walk it" (never a verdict).

    Only for a body of at most two bytes per message the limits allow (upb cannot be made to do more
    work than a request within the limits costs anyway), parsed into a copy of the request type whose
    `AnyValue` has no arrays nor kvlists. When that copy, without unknown fields, serializes back to
    exactly `body`, the body is the plain encoding (each singular field once, nothing unknown, no
    nesting past `MAX_DEPTH`) that the walk accepts whenever its spans and attributes are within the
    limits; those are counted on the copy (repeated fields' lengths, an upper bound of what the walk
    charges). Anything else (arrays, unknown fields, repeats, invalid UTF-8, a larger body) is walked.
    """
    if len(body) > 2 * (limits.max_spans + limits.max_attributes):
        return False  # also checked by `_Odds.worth_trying`: this function alone must stay safe
    shape = _plain_request_class()
    if shape is None:
        return False
    request = shape()
    try:
        request.ParseFromString(body)
    except DecodeError:
        return False
    request.DiscardUnknownFields()
    if request.SerializeToString() != body:
        return False
    # Each element the walk charges takes two bytes of the body at least (a tag, then a length or a value),
    # so a body of at most twice a limit cannot exceed that limit: only the other is counted, if any.
    size = len(body)
    if size <= 2 * limits.max_attributes:
        return size <= 2 * limits.max_spans or _spans_within(request, limits.max_spans)
    counts = [0, 0]  # indexed by budget kind: _SPANS, _ATTRIBUTES
    _count_repeated(request, _PLANS[request.DESCRIPTOR.full_name], counts)
    return counts[_SPANS] <= limits.max_spans and counts[_ATTRIBUTES] <= limits.max_attributes


def _spans_within(request: Message, max_spans: int) -> bool:
    """Whether `request` (of the plain type) holds at most `max_spans` span-like messages, visiting only
    the fields that can lead to one: not the attributes, most of a request's messages."""
    counts = [0, 0]
    _count_repeated(request, _span_plan(request.DESCRIPTOR.full_name), counts)
    return counts[_SPANS] <= max_spans


@functools.cache
def _span_plan(name: str) -> _Plan:
    """`_PLANS[name]` cut down to the fields through which span-like messages can be reached."""

    def cut(plan: _Plan) -> _Plan:
        kept: _Plan = []
        for field, repeated, kind, inner in plan:
            inner = cut(inner)
            if kind == _SPANS or inner:
                kept.append((field, repeated, kind, inner))
        return kept

    return cut(_PLANS[name])


def _count_repeated(message: Message, plan: _Plan, counts: list[int]) -> None:
    """Add the elements of every repeated field under `message` to `counts` ([spans, attributes]),
    charged by kind as the walk charges them (an upper bound: the walk counts a packed field once)."""
    for name, repeated, kind, inner in plan:
        value = getattr(message, name)
        if not repeated:
            _count_repeated(value, inner, counts)  # type: ignore[arg-type]
            continue
        counts[kind] += len(value)
        if inner:
            for item in value:
                _count_repeated(item, inner, counts)


# Per message type of the plain copy, its fields worth visiting: (name, repeated, budget kind, the plan of
# the message inside, empty if nothing repeated can be found in it); a singular message field is listed
# only when repeated fields can be found inside it.
_Plan = list[tuple[str, bool, int, "_Plan"]]
_PLANS: dict[str, _Plan] = {}


def rebuilt_request_type(
    edit: Callable[[descriptor_pb2.FileDescriptorProto], None],
    request: Descriptor = ExportTraceServiceRequest.DESCRIPTOR,
) -> Descriptor:
    """A request type's descriptor (`ExportTraceServiceRequest`'s unless told) rebuilt in a descriptor pool of
    its own, each of its files (dependencies first) changed by `edit` on the way: a variant of the request
    type with the same wire format."""
    files: list[FileDescriptor] = []

    def collect(file: FileDescriptor) -> None:
        for dependency in file.dependencies:
            collect(dependency)
        if file not in files:
            files.append(file)

    collect(request.file)
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        edit(proto)
        pool.Add(proto)
    return pool.FindMessageTypeByName(request.full_name)


def _without_value_containers(proto: descriptor_pb2.FileDescriptorProto) -> None:
    for message in proto.message_type:
        if f"{proto.package}.{message.name}" == "opentelemetry.proto.common.v1.AnyValue":
            kept = [field for field in message.field if field.name not in _VALUE_CONTAINERS]
            del message.field[:]
            message.field.extend(kept)


@functools.cache
def _plain_request_class() -> type[Message] | None:
    """`ExportTraceServiceRequest` without `AnyValue.array_value` and `kvlist_value` (their bytes become
    unknown fields); None if its messages could nest past `MAX_DEPTH`."""
    request = rebuilt_request_type(_without_value_containers)
    if _plan(request, ()) > MAX_DEPTH:
        return None
    return message_factory.GetMessageClass(request)


def _plan(descriptor: Descriptor, path: tuple[str, ...]) -> int:
    """Fill `_PLANS` for `descriptor` and what it holds; how deep messages can nest under it (walk depth),
    beyond `MAX_DEPTH` when the shortcut cannot be trusted for this schema."""
    name = descriptor.full_name
    if name in path or len(descriptor.fields) > MAX_OTHER_FIELDS:
        return MAX_DEPTH + 1  # recursive (unbounded), or more fields than the walk lets a message hold: no shortcut
    deepest = len(path)
    plan: _Plan = []
    for field in descriptor.fields:
        child = field.message_type
        inner: _Plan = []
        if child is not None:
            deepest = max(deepest, _plan(child, (*path, name)))
            inner = _PLANS.get(child.full_name, [])
        if _is_repeated(field):
            kind = _SPANS if child is not None and child.full_name in _SPAN_LIKE else _ATTRIBUTES
            plan.append((field.name, True, kind, inner))
        elif inner:
            plan.append((field.name, False, _OTHER, inner))
    _PLANS[name] = plan
    return deepest


# --- OTLP/JSON ---------------------------------------------------------------------------------------


def check_json_text(text: str, limits: RequestLimits) -> None:
    """Before `json.loads`: an upper bound on the JSON values the text holds, counted in C.

    Every value but the first of a container follows a comma, so commas plus containers bound them.
    """
    values = text.count(",") + text.count("{") + text.count("[")
    if values > limits.max_json_values:
        raise RequestTooLarge(f"JSON body holds more than {limits.max_json_values} values")


def check_json_data(data: dict[str, Any], limits: RequestLimits) -> None:
    """Before `json_format` builds the request: the same span and attribute limits as for protobuf."""
    budget = _Budget(limits)
    for item in _json_children(data, budget, 0):
        _check_json_item(item, budget, 1)


def _check_json_item(item: Any, budget: _Budget, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise RequestTooLarge(f"JSON nested deeper than {MAX_DEPTH} containers")
    for child in _json_children(item, budget, depth):
        _check_json_item(child, budget, depth + 1)


def _json_children(item: Any, budget: _Budget, depth: int) -> Iterator[Any]:
    """The dicts under `item`'s lists, each list element charged to spans or attributes by its key."""
    if not isinstance(item, dict):
        return
    for key, value in item.items():
        if isinstance(value, list):
            kind = _SPANS if key in _JSON_SPAN_KEYS else _ATTRIBUTES
            for element in value:
                budget.spend(kind)
                yield element
        elif isinstance(value, dict):
            yield value
