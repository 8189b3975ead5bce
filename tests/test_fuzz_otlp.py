"""Fuzzing the OTLP decoders and the HTTP receiver (issue 11): no crash, no hang, no unbounded work.

A bounded hypothesis run (about a minute in all; examples are random each run, nothing is stored) of
protobuf bodies (random bytes, mutations of valid requests, wire-format trees built to amplify),
OTLP/JSON documents and gzip framing; then the same inputs over HTTP. The corpus in
`fixtures/hostile/` keeps the cases of issue 11 as regression inputs, with the status each must get.
"""

from __future__ import annotations

import gzip
import http.client
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.otlp_io import Rejected, decode, gunzip
from otel_context.receiver.otlp_io import encode_varint as varint
from otel_context.receiver.service import SidecarThread
from otel_context.spans.otlp import records_from_request
from otel_context.spans.otlp_limits import RequestLimits

CORPUS = Path(__file__).parent / "fixtures" / "hostile"
SMALL = RequestLimits(max_spans=64, max_attributes=256)  # small, so fuzzed bodies can reach them


def fuzz(examples: int) -> settings:
    """A bounded run: a fixed number of random examples (about a minute for the whole file), nothing stored."""
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


# --- the HTTP receiver, fuzzed and replaying the corpus -----------------------------------------------------


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    settings_ = resolve_receiver_settings(
        port=0, grpc_port=-1, settle_s=0.1, state_dir=str(tmp_path_factory.mktemp("state")), max_in_progress=64
    )
    delivery = resolve_settings(endpoint="http://127.0.0.1:9", token="unused", max_elapsed_s=0.1)
    with SidecarThread(settings_, delivery) as sidecar:
        yield sidecar


def post(sidecar, body: bytes, content_type: str, encoding: str = "") -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.http_port, timeout=10)
    try:
        headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        conn.close()


@fuzz(1500)
@given(
    st.binary(max_size=2048) | mutated(),
    st.sampled_from(["application/x-protobuf", "application/json", "text/plain", "application/json; charset=x"]),
    st.sampled_from(["", "gzip", "br", "GZIP"]),
)
def test_fuzz_http_receiver(receiver, body, content_type, encoding):
    if encoding.lower() == "gzip" and body[:1] != b"\x1f":
        body = gzip.compress(body)
    status, payload, answer_type = post(receiver, body, content_type, encoding)
    assert status in (200, 400, 413, 415)
    if answer_type == "application/json":
        json.loads(payload)
    else:
        assert answer_type == "application/x-protobuf"


CASES = json.loads((CORPUS / "corpus.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_corpus_case_gets_its_status_quickly(receiver, case):
    body = (CORPUS / case["file"]).read_bytes()
    started = time.monotonic()
    status, payload, _ = post(receiver, body, case["content_type"], case["encoding"])
    assert time.monotonic() - started < 2.0
    assert status == case["status"], payload[:300]
