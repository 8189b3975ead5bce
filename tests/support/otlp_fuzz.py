"""What the OTLP fuzz runs share: a bounded hypothesis run, a seed request using every message type, its mutations."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def fuzz(examples: int) -> settings:
    """A bounded run: a fixed number of random examples (seconds per test), nothing stored."""
    return settings(
        max_examples=examples,
        deadline=3000,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def seed_request() -> bytes:
    """A request using every message type: attributes of each kind, nested arrays and kvlists, events, links."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "scope"
    for n in range(3):
        span = scope_spans.spans.add(
            trace_id=bytes([n + 1]) * 16, span_id=bytes([n + 1]) * 8, name=f"span {n}", start_time_unix_nano=n
        )
        span.attributes.add(key="s", value=AnyValue(string_value="text ü"))
        span.attributes.add(key="i", value=AnyValue(int_value=-5))
        span.attributes.add(key="b", value=AnyValue(bytes_value=b"\xff\x00"))
        array = span.attributes.add(key="a").value.array_value
        array.values.add(string_value="x")
        array.values.add().kvlist_value.values.append(KeyValue(key="k", value=AnyValue(double_value=1.5)))
        span.events.add(name="event", time_unix_nano=3).attributes.add(key="e", value=AnyValue(bool_value=True))
        span.links.add(trace_id=b"\x09" * 16, span_id=b"\x09" * 8).attributes.add(key="l")
        span.status.message = "fine"
    return request.SerializeToString()


SEED = seed_request()


@st.composite
def mutated(draw: st.DrawFn, seed: bytes = SEED) -> bytes:
    body = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if op == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del body[at : at + draw(st.integers(1, 8))]
        elif op == "repeat":
            body[at:at] = body[at : at + draw(st.integers(1, 16))] * draw(st.integers(2, 200))
        else:
            del body[at:]
    return bytes(body)
