"""Fuzzing the OTLP decoders (issue 11): no crash, no hang, no unbounded work.

A bounded hypothesis run (examples are random each run, nothing is stored) of protobuf bodies (random
bytes, mutations of valid requests, wire-format trees built to amplify), OTLP/JSON documents and gzip
framing. The same inputs go over HTTP, and the corpus of issue 11 too, in tests/e2e/test_fuzz_otlp.py.
"""

from __future__ import annotations

import gzip
import json
import time

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_context.receiver.intake import Rejected, decode, gunzip
from otel_context.receiver.intake import encode_varint as varint
from otel_context.spans.otlp import records_from_request
from otel_context.spans.otlp_limits import RequestLimits

from ..support.otlp_fuzz import SEED, fuzz, mutated

SMALL = RequestLimits(max_spans=64, max_attributes=256)  # small, so fuzzed bodies can reach them


def count_work(request: ExportTraceServiceRequest) -> tuple[int, int]:
    """(spans, attributes) as `RequestLimits` counts them, from the parsed request."""
    spans = attributes = 0

    def values(key_values) -> int:
        total = 0
        for key_value in key_values:
            total += 1 + any_value(key_value.value)
        return total

    def any_value(value: AnyValue) -> int:
        kind = value.WhichOneof("value")
        if kind == "array_value":
            return sum(1 + any_value(item) for item in value.array_value.values)
        if kind == "kvlist_value":
            return values(value.kvlist_value.values)
        return 0

    for resource_spans in request.resource_spans:
        spans += 1 + len(resource_spans.scope_spans)
        attributes += values(resource_spans.resource.attributes) + len(resource_spans.resource.entity_refs)
        for scope_spans in resource_spans.scope_spans:
            attributes += values(scope_spans.scope.attributes)
            for span in scope_spans.spans:
                spans += 1 + len(span.events) + len(span.links)
                attributes += values(span.attributes)
                attributes += sum(values(item.attributes) for item in [*span.events, *span.links])
    return spans, attributes


def decodes_within_limits(body: bytes, *, json_body: bool = False, gzipped: bool = False) -> int | None:
    """Decode as the receiver does; the status it would answer on refusal, or None when accepted."""
    started = time.monotonic()
    try:
        if gzipped:
            body = gunzip(body, 1024 * 1024)
        request = decode(body, json=json_body, limits=SMALL)
    except Rejected as rejected:
        assert rejected.status in (400, 413), rejected.message
        return rejected.status
    finally:
        assert time.monotonic() - started < 1.0
    spans, attributes = count_work(request)
    assert spans <= SMALL.max_spans and attributes <= SMALL.max_attributes  # the bound held before upb parsed
    records_from_request(request)
    return None


# --- protobuf -----------------------------------------------------------------------------------------------


MAX_FUZZ_BYTES = 1 << 18  # one generated node: repeats multiply down a tree, 40 per level would need terabytes


def repeat(chunk: bytes, times: int) -> bytes:
    """`chunk * times`, cut to `MAX_FUZZ_BYTES` before it is built (a cut body is hostile input all the same)."""
    chunk = chunk[:MAX_FUZZ_BYTES]
    return chunk * max(1, min(times, MAX_FUZZ_BYTES // max(1, len(chunk))))


# A wire-format tree: fields with the numbers OTLP uses (and a few it does not), any wire type, nested.
fields = st.recursive(
    st.tuples(st.integers(1, 16), st.sampled_from([0, 1, 5]), st.binary(max_size=9)).map(
        lambda f: varint(f[0] << 3 | f[1]) + ({0: varint(len(f[2])), 1: f[2][:8].ljust(8, b"\0"), 5: b"abcd"}[f[1]])
    )
    | st.tuples(st.integers(1, 16), st.binary(max_size=12)).map(
        lambda f: varint(f[0] << 3 | 2) + varint(len(f[1])) + f[1]
    ),
    lambda children: st.tuples(st.integers(1, 16), st.lists(children, max_size=6), st.integers(1, 40)).map(
        lambda f: repeat(varint(f[0] << 3 | 2) + varint(len(b"".join(f[1]))) + b"".join(f[1]), f[2])
    ),
    max_leaves=40,
)


@fuzz(3000)
@given(st.binary(max_size=4096) | mutated() | fields.map(lambda f: f if isinstance(f, bytes) else b""))
def test_fuzz_protobuf_decoder(body):
    decodes_within_limits(body)


# --- OTLP/JSON ----------------------------------------------------------------------------------------------

json_keys = st.sampled_from(
    ["resourceSpans", "scopeSpans", "spans", "attributes", "events", "links", "key", "value", "stringValue",
     "arrayValue", "kvlistValue", "values", "traceId", "spanId", "name", "kind", "intValue", "x"]
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["01" * 16, "02" * 8, "\udc00", "\ud800\udc00"]),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(json_keys, children, max_size=6),
    max_leaves=60,
)  # fmt: skip


@fuzz(1000)
@given(st.dictionaries(json_keys, json_values, max_size=4), st.sampled_from(["plain", "ascii", "cut", "bytes"]))
def test_fuzz_json_decoder(document, form):
    text = json.dumps(document, ensure_ascii=form == "ascii")
    body = text.encode("utf-8", "surrogatepass")
    if form == "cut":
        body = body[: len(body) // 2]
    elif form == "bytes":
        body = body.replace(b"x", b"\xff")
    decodes_within_limits(body, json_body=True)


# --- gzip framing -------------------------------------------------------------------------------------------


@fuzz(1500)
@given(st.lists(st.sampled_from([SEED, b"", b"\x0a\x00" * 1000]) | mutated(), min_size=1, max_size=4), st.data())
def test_fuzz_gzip_framing(members, data):
    body = b"".join(gzip.compress(member) for member in members)
    cut = data.draw(st.sampled_from(["none", "truncate", "garbage", "zeros"]))
    if cut == "truncate":
        body = body[: data.draw(st.integers(0, len(body)))]
    elif cut == "garbage":
        body += data.draw(st.binary(min_size=1, max_size=16))
    elif cut == "zeros":
        body += b"\x00" * 8
    status = decodes_within_limits(body, gzipped=True)
    if cut in ("none", "zeros") and status is None:
        assert records_from_request(decode(b"".join(members), json=False, limits=SMALL)) is not None
