"""The sidecar's CPU shortcuts (issue 15) decide exactly as the long ways they skip.

- work limits: a plainly encoded body checked in C gets the walk's verdict, at the limits and past them;
- the session book: turns folded in one transaction give the threads and rows one transaction each gives;
- the sending queue: two versions of a thread in one batch coalesce, the older spool row removed;
- session uploads: a body built from the version the book still has goes as it is; one the book has
  moved past (another process added a turn) is rebuilt from the book before it is sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_context.delivery.item import QueueItem
from otel_context.delivery.queue import SendingQueue
from otel_context.delivery.spool import Spool
from otel_context.receiver.intake import encode_varint as varint
from otel_context.spans import otlp_limits
from otel_context.spans.otlp_limits import MalformedWire, RequestLimits, RequestTooLarge


def walk_verdict(body: bytes, limits: RequestLimits) -> str:
    """What the walk alone says."""
    try:
        otlp_limits._walk(
            body, 0, len(body), ExportTraceServiceRequest.DESCRIPTOR.full_name, 0, otlp_limits._Budget(limits),
            otlp_limits._schemas(),
        )  # fmt: skip
    except (RequestTooLarge, MalformedWire) as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


def check_verdict(body: bytes, limits: RequestLimits) -> str:
    """What `check_protobuf` says, the shortcut tried first."""
    otlp_limits._SHORTCUT.misses = 0
    try:
        otlp_limits.check_protobuf(body, limits)
    except (RequestTooLarge, MalformedWire) as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Requests as an SDK encodes them: any number of every repeated field, sometimes arrays and kvlists."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_spans = request.resource_spans.add()
        for _ in range(draw(st.integers(0, 3))):
            resource_spans.resource.attributes.add(key=draw(st.text(max_size=3)), value=AnyValue(string_value="v"))
        for _ in range(draw(st.integers(0, 2))):
            resource_spans.resource.entity_refs.add().id_keys.extend(draw(st.lists(st.text(max_size=2), max_size=3)))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            for _ in range(draw(st.integers(0, 4))):
                span = scope_spans.spans.add(name=draw(st.text(max_size=4)), trace_id=draw(st.binary(max_size=16)))
                for _ in range(draw(st.integers(0, 5))):
                    value = span.attributes.add(key=draw(st.text(max_size=3))).value
                    kind = draw(st.sampled_from(["text", "int", "array", "kvlist", "empty"]))
                    if kind == "text":
                        value.string_value = draw(st.text(max_size=6))
                    elif kind == "int":
                        value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
                    elif kind == "array":
                        value.array_value.values.add(string_value="x")
                    elif kind == "kvlist":
                        value.kvlist_value.values.add(key="k")
                for _ in range(draw(st.integers(0, 2))):
                    span.events.add(name="e").attributes.add(key="x")
                for _ in range(draw(st.integers(0, 1))):
                    span.links.add().attributes.add(key="x")
    return request.SerializeToString()


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    requests(),
    st.integers(0, 30),
    st.integers(0, 80),
    st.sampled_from(["plain", "repeated", "unknown field", "cut"]),
)
def test_work_limit_shortcut_gives_the_walks_verdict(body, max_spans, max_attributes, edit):
    if edit == "repeated":
        body += body[: len(body) // 2]
    elif edit == "unknown field":
        body += b"\x98\x02\x01"
    elif edit == "cut":
        body = body[: len(body) * 2 // 3]
    for limits in (RequestLimits(max_spans=max_spans, max_attributes=max_attributes), RequestLimits()):
        assert check_verdict(body, limits) == walk_verdict(body, limits)


def field(number: int, content: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(content)) + content


def array_attribute(values: int) -> bytes:
    """A span attribute (KeyValue) holding an array of `values` empty values."""
    return field(9, field(1, b"a") + field(2, field(5, field(1, b"") * values)))


@pytest.mark.parametrize(
    ("body", "limits"),
    [
        # array elements count as attributes too: just past the limit only through them
        (field(1, field(2, field(2, field(9, b"") * 3 + array_attribute(5)))), RequestLimits(10, 8)),
        (field(1, field(2, field(2, field(9, b"") * 3 + array_attribute(5)))), RequestLimits(10, 9)),
        # more than MAX_OTHER_FIELDS unknown fields in one message, and an unknown group (wire type 3)
        (field(1, b"\xf8\x01\x00" * 300), RequestLimits()),
        (field(1, b"\xfb\x01\xfc\x01"), RequestLimits()),
    ],
    ids=["array past the limit", "array at the limit", "unknown fields repeated", "unknown group"],
)
def test_work_limit_shortcut_on_what_only_the_walk_sees(body, limits):
    assert check_verdict(body, limits) == walk_verdict(body, limits)


@pytest.mark.parametrize(
    "body",
    [
        field(1, b"") * 40,  # empty ResourceSpans: spans
        field(1, field(2, field(2, field(9, b"") * 40 + field(11, b"") * 3))),  # attributes and events of a span
        field(1, field(1, field(3, field(3, b"a") * 40))),  # an entity ref's keys
    ],
    ids=["resource spans", "span attributes", "entity ref keys"],
)
def test_work_limit_shortcut_at_and_just_past_the_limits(body):
    counts = [0, 0]  # [spans, attributes], as the shortcut counts them
    plain = otlp_limits._plain_request_class()
    assert plain is not None
    request = plain.FromString(body)
    otlp_limits._count_repeated(request, otlp_limits._PLANS[request.DESCRIPTOR.full_name], counts)
    spans, attributes = counts
    for limits in (
        RequestLimits(max_spans=spans, max_attributes=attributes),
        RequestLimits(max_spans=spans - 1, max_attributes=attributes),
        RequestLimits(max_spans=spans, max_attributes=max(0, attributes - 1)),
    ):
        assert check_verdict(body, limits) == walk_verdict(body, limits)
    assert check_verdict(body, RequestLimits(max_spans=spans, max_attributes=attributes)) == "ok"


# one ResourceSpans, one ScopeSpans, 20 spans of 3 empty attributes: 22 spans and 60 attributes in 166 bytes
SPANS_22_ATTRIBUTES_60 = field(1, field(2, field(2, field(9, b"") * 3) * 20))


@pytest.mark.parametrize(
    ("limits", "verdict"),
    [
        (RequestLimits(max_spans=22, max_attributes=83), "ok"),  # attributes bounded by the size: spans counted
        (RequestLimits(max_spans=21, max_attributes=83), "RequestTooLarge"),
        (RequestLimits(max_spans=83, max_attributes=83), "ok"),  # both bounded by the size: nothing counted
        (RequestLimits(max_spans=23, max_attributes=60), "ok"),  # neither: both counted
        (RequestLimits(max_spans=24, max_attributes=59), "RequestTooLarge"),
    ],
)
def test_work_limit_shortcut_counts_only_what_the_body_size_does_not_bound(limits, verdict):
    body = SPANS_22_ATTRIBUTES_60
    assert len(body) == 166
    assert check_verdict(body, limits) == walk_verdict(body, limits)
    assert check_verdict(body, limits).startswith(verdict)
    assert otlp_limits._fits_plainly(body, limits) == (verdict == "ok")  # decided by the shortcut, not the walk


def test_a_run_offered_again_is_known_to_the_spool_and_queued_once(tmp_path: Path):
    queue = SendingQueue(100, Spool(str(tmp_path / "spool"), 10 * 1024 * 1024))
    first = queue.offer([QueueItem("t-1", b"run", segment="a/1"), QueueItem("t-1", b"next", segment="a/2")])
    again = queue.offer([QueueItem("t-1", b"run", segment="a/1")])  # a write-ahead-log replay of the same run
    assert (first.accepted, again.accepted, again.refused) == (2, 1, 0)
    assert queue.spool is not None and queue.spool.count() == 2
    taken = queue.take(lambda: False, limit=10)
    assert [item.body for item in taken] == [b"run"]  # one upload per thread at a time, in order
    queue.remove_rows([], delivered=taken)
    queue.settle(taken[0])
    assert queue.offer([QueueItem("t-1", b"run", segment="a/1")]).accepted == 1  # delivered: in the ledger
    assert [item.body for item in queue.take(lambda: False, limit=10)] == [b"next"]
    assert queue.spool.count() == 1
