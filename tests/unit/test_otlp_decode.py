"""An OpenTelemetry Collector forwards a LangChain app's spans as OTLP; the receiver reads the same spans back.

Real SDK spans go through the real OTLP encoder, then through `otel_context.spans.otlp`, and must come
out as the `SpanRecord`s the in-process exporter builds from the very same spans. Needs no conftest.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status as SdkStatus
from opentelemetry.trace import StatusCode

from otel_context.model import SpanRecord, SpanStatus
from otel_context.spans.otlp import OtlpDecodeError, decode_json, decode_protobuf, records_from_request
from otel_context.spans.sdk import record_from_sdk

INPUT_MESSAGES = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "What is OTLP? é ✓"}]}])
OUTPUT_MESSAGES = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "A protocol."}]}])


@pytest.fixture(scope="module")
def sdk_spans() -> tuple[ReadableSpan, ...]:
    """A LangChain-shaped trace as OpenLLMetry records it: a chain, an LLM call, a failing tool."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-test-app", "team.size": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otlp-test")
    with tracer.start_as_current_span(
        "RunnableSequence.workflow",
        attributes={"traceloop.span.kind": "workflow", "traceloop.entity.name": "RunnableSequence"},
    ) as root:
        with tracer.start_as_current_span(
            "ChatOpenAI.chat",
            attributes={
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.input.messages": INPUT_MESSAGES,
                "gen_ai.output.messages": OUTPUT_MESSAGES,
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.request.temperature": 0.2,
                "llm.is_streaming": False,
                "gen_ai.response.finish_reasons": ("stop",),
                "llm.token_ids": (1, 2, 3),
                "llm.scores": (0.5, 1.5),
                "llm.flags": (True, False),
                "empty.text": "",
            },
        ) as llm:
            llm.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop"})
            llm.set_status(SdkStatus(StatusCode.OK))
        with tracer.start_as_current_span("search.tool", record_exception=False) as tool:
            tool.record_exception(RuntimeError("search backend down"))
            tool.set_status(SdkStatus(StatusCode.ERROR, "search backend down"))
        root.set_attribute("traceloop.entity.output", json.dumps({"outputs": "A protocol."}))
    provider.shutdown()
    return exporter.get_finished_spans()


@pytest.fixture(scope="module")
def body(sdk_spans: tuple[ReadableSpan, ...]) -> bytes:
    return encode_spans(sdk_spans).SerializeToString()


def comparable(record: SpanRecord) -> dict[str, Any]:
    """A record with its mappings as plain dicts, so SDK and OTLP records compare field by field."""
    return {
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_id": record.parent_id,
        "name": record.name,
        "start_ns": record.start_ns,
        "end_ns": record.end_ns,
        "attributes": dict(record.attributes),
        "events": [(e.name, e.timestamp_ns, dict(e.attributes)) for e in record.events],
        "status": (record.status_code, record.status_message),
        "resource": dict(record.resource),
    }


def assert_same_as_sdk(records: list[SpanRecord], sdk_spans: tuple[ReadableSpan, ...]) -> None:
    expected = {span.context.span_id: comparable(record_from_sdk(span)) for span in sdk_spans}
    assert {record.span_id: comparable(record) for record in records} == expected


def walk_spans(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            yield from scope_spans["spans"]


def otlp_json(request: ExportTraceServiceRequest, **options: bool) -> dict[str, Any]:
    """The protobuf JSON mapping with ids rewritten from base64 to hex, as the OTLP/JSON spec requires."""
    document = json_format.MessageToDict(request, **options)
    for span in walk_spans(document):
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64decode(span[key]).hex()
    return document


def request_with(*spans: Span, resource: dict[str, str] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, text in (resource or {}).items():
        resource_spans.resource.attributes.add(key=key, value=AnyValue(string_value=text))
    resource_spans.scope_spans.append(ScopeSpans(spans=spans))
    return request


TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")


# --- protobuf ----------------------------------------------------------------------------------------


def test_protobuf_gives_the_records_the_sdk_exporter_gives(sdk_spans, body):
    records, rejected = records_from_request(decode_protobuf(body))

    assert rejected == []
    assert len(records) == 3
    assert_same_as_sdk(records, sdk_spans)
    by_name = {record.name: record for record in records}
    llm, tool, root = by_name["ChatOpenAI.chat"], by_name["search.tool"], by_name["RunnableSequence.workflow"]
    assert root.parent_id is None
    assert llm.parent_id == tool.parent_id == root.span_id
    assert json.loads(llm.attributes["gen_ai.input.messages"])[0]["parts"][0]["content"] == "What is OTLP? é ✓"
    assert llm.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert llm.status_code == SpanStatus.OK
    assert (tool.status_code, tool.status_message) == (SpanStatus.ERROR, "search backend down")
    assert tool.events[0].name == "exception"
    assert tool.events[0].attributes["exception.type"] == "RuntimeError"
    assert root.status_code == SpanStatus.UNSET
    assert root.resource["service.name"] == "otlp-test-app"


def test_records_of_one_resource_share_one_read_only_resource(body):
    records, _ = records_from_request(decode_protobuf(body))

    assert len({id(record.resource) for record in records}) == 1
    with pytest.raises(TypeError):
        records[0].resource["service.name"] = "changed"  # type: ignore[index]


def test_malformed_protobuf_raises():
    with pytest.raises(OtlpDecodeError, match="malformed protobuf"):
        decode_protobuf(b"\xff" * 10)
    with pytest.raises(OtlpDecodeError, match="malformed protobuf"):
        decode_protobuf(b'{"resourceSpans": []}')


def test_every_truncation_inside_a_message_raises(body):
    for length in range(1, len(body)):
        with pytest.raises(OtlpDecodeError, match="malformed protobuf"):
            decode_protobuf(body[:length])


def test_truncation_between_resource_spans_is_undetectable(body):
    """Protobuf has no end marker: a body cut between two top-level fields is a valid shorter request."""
    one = decode_protobuf(body)
    two = ExportTraceServiceRequest(resource_spans=[*one.resource_spans, *one.resource_spans])
    records, _ = records_from_request(decode_protobuf(two.SerializeToString()[: len(body)]))
    assert len(records) == 3


def test_invalid_utf8_in_a_protobuf_string_field_is_repaired_not_fatal():
    # proto3 rejects the whole message for one bad string; the good spans must not pay for it.
    attribute = KeyValue(key="k", value=AnyValue(bytes_value=b"caf\xe9!"))
    good = Span(
        trace_id=TRACE,
        span_id=b"\x02" * 8,
        name="good",
        attributes=[KeyValue(key="k", value=AnyValue(string_value="ok"))],
    )
    raw = request_with(Span(trace_id=TRACE, span_id=SPAN, name="bad", attributes=[attribute]), good).SerializeToString()
    as_string = raw.replace(b"\x3a\x05caf\xe9!", b"\x0a\x05caf\xe9!")  # AnyValue.bytes_value -> string_value
    assert as_string != raw
    with pytest.raises(Exception, match="UTF-8"):
        ExportTraceServiceRequest.FromString(as_string)

    records, rejected = records_from_request(decode_protobuf(as_string))
    assert rejected == []
    assert {r.name: r.attributes["k"] for r in records} == {"bad": "caf\ufffd!", "good": "ok"}


def test_a_body_malformed_otherwise_still_raises():
    with pytest.raises(OtlpDecodeError, match="malformed protobuf"):
        decode_protobuf(b"\x0a\xff\xff\xff\x0f")


# --- OTLP/JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("enums", ["integers", "names"])
def test_json_gives_the_same_records_as_protobuf(sdk_spans, body, enums):
    document = otlp_json(decode_protobuf(body), use_integers_for_enums=enums == "integers")
    assert isinstance(next(walk_spans(document))["startTimeUnixNano"], str)  # int64 as decimal strings

    records, rejected = records_from_request(decode_json(json.dumps(document).encode()))

    assert rejected == []
    assert_same_as_sdk(records, sdk_spans)


SPEC_EXAMPLE = b"""{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0"},
      "spans": [
        {
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "EEE19B7EC3C1B174",
          "parentSpanId": "EEE19B7EC3C1B173",
          "name": "I'm a server span",
          "startTimeUnixNano": "1544712660000000000",
          "endTimeUnixNano": 1544712661000000000,
          "kind": 2,
          "futureField": {"nested": [1, 2, 3]},
          "attributes": [
            {"key": "my.span.attr", "value": {"stringValue": "some value"}},
            {"key": "count", "value": {"intValue": "42"}},
            {"key": "count.number", "value": {"intValue": 43}},
            {"key": "ratio", "value": {"doubleValue": 0.25}},
            {"key": "flag", "value": {"boolValue": true}},
            {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}},
            {"key": "map", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"stringValue": "x"}}]}}}
          ],
          "events": [{"timeUnixNano": "1544712660500000000", "name": "feedback",
                      "attributes": [{"key": "score", "value": {"intValue": "1"}}]}],
          "status": {"code": 2, "message": "boom"}
        },
        {
          "traceId": "5b8efff798038103d269b633813fc60c",
          "spanId": "eee19b7ec3c1b173",
          "parentSpanId": "",
          "name": "root",
          "startTimeUnixNano": "1544712659000000000",
          "endTimeUnixNano": "1544712662000000000"
        }
      ]
    }]
  }]
}"""


def test_the_spec_example_with_hex_ids_string_nanos_and_an_unknown_field():
    records, rejected = records_from_request(decode_json(SPEC_EXAMPLE))

    assert rejected == []
    server, root = records
    assert server.trace_id == root.trace_id == 0x5B8EFFF798038103D269B633813FC60C
    assert server.span_id == 0xEEE19B7EC3C1B174
    assert server.parent_id == root.span_id == 0xEEE19B7EC3C1B173
    assert root.parent_id is None
    assert (server.start_ns, server.end_ns) == (1544712660000000000, 1544712661000000000)
    assert server.attributes == {
        "my.span.attr": "some value",
        "count": 42,
        "count.number": 43,
        "ratio": 0.25,
        "flag": True,
        "tags": ("a", 1),
        "map": {"inner": "x"},
    }
    assert [(e.name, e.timestamp_ns, dict(e.attributes)) for e in server.events] == [
        ("feedback", 1544712660500000000, {"score": 1})
    ]
    assert (server.status_code, server.status_message) == (SpanStatus.ERROR, "boom")
    assert dict(server.resource) == {"service.name": "my.service"}
    assert decode_json(SPEC_EXAMPLE).resource_spans[0].scope_spans[0].spans[0].kind == Span.SPAN_KIND_SERVER


def test_hex_ids_that_are_also_valid_base64_are_read_as_hex():
    trace_hex, span_hex = "0123456789abcdef0123456789abcdef", "abcdef0123456789"
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": trace_hex, "spanId": span_hex}]}]}]}
    naive = json_format.Parse(json.dumps(document), ExportTraceServiceRequest())
    assert naive.resource_spans[0].scope_spans[0].spans[0].trace_id != bytes.fromhex(trace_hex)  # the trap

    (record,), _ = records_from_request(decode_json(json.dumps(document).encode()))

    assert (record.trace_hex, record.span_hex) == (trace_hex, span_hex)


def test_snake_case_keys_and_enum_names_are_accepted():
    document = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE.hex(),
                                "span_id": SPAN.hex(),
                                "parent_span_id": "00000000000000aa",
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": 5,
                                "status": {"code": "STATUS_CODE_OK"},
                                "links": [{"trace_id": TRACE.hex(), "span_id": "00000000000000bb"}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    request = decode_json(json.dumps(document).encode())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.links[0].span_id == bytes.fromhex("00000000000000bb")

    (record,), _ = records_from_request(request)

    assert (record.trace_id, record.span_id, record.parent_id) == (int(TRACE.hex(), 16), int(SPAN.hex(), 16), 0xAA)
    assert (record.start_ns, record.end_ns, record.status_code) == (5, 5, SpanStatus.OK)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [', "invalid JSON"),
        (b"[]", "expected an object, got list"),
        (b'{"resourceSpans": 5}', "resourceSpans"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "soon"),
        (
            b'{"resourceSpans": [{}, {"scopeSpans": [{}, {"spans": [{}, {}, {}, {"traceId": "xyz"}]}]}]}',
            "resourceSpans[1].scopeSpans[1].spans[3].traceId: expected 32 hex characters, got 'xyz'",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "7u6bfsPBsXQ="}]}]}]}',
            "spans[0].spanId: expected 16 hex characters",  # base64, as protobuf's own mapping would send
        ),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"parentSpanId": 12}]}]}]}', "parentSpanId: expected 16"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab cd"}]}]}]}', "expected 32 hex"),
        (b"[" * 100_000, "invalid JSON"),
        (b"\xef\xbb\xbf{} \xff", "invalid JSON"),  # a stray byte outside any string is no text to repair
    ],
)
def test_malformed_json_raises_saying_what_is_wrong(body, message):
    with pytest.raises(OtlpDecodeError, match=r"^JSON body: ") as raised:
        decode_json(body)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [(b'"\\ud800 lone"', "\ufffd lone"), (b'"caf\xe9"', "caf\ufffd"), (b'"\\ud83d\\ude00 pair"', "\U0001f600 pair")],
)
def test_invalid_utf8_and_lone_surrogates_in_json_are_repaired(name, expected):
    body = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": ' + name + b"}]}]}]}"
    assert decode_json(body).resource_spans[0].scope_spans[0].spans[0].name == expected


def test_a_byte_order_mark_and_an_empty_request_are_fine():
    assert records_from_request(decode_json(b"\xef\xbb\xbf{}")) == ([], [])


# --- invalid spans and attribute values --------------------------------------------------------------


def test_spans_with_invalid_ids_are_rejected_alone():
    request = request_with(
        Span(trace_id=TRACE, span_id=SPAN, name="good"),
        Span(trace_id=TRACE[:15], span_id=SPAN, name="short trace"),
        Span(trace_id=bytes(16), span_id=SPAN, name="zero trace"),
        Span(trace_id=TRACE, span_id=SPAN + b"\x01", name="long span"),
        Span(trace_id=TRACE, span_id=bytes(8), name="zero span"),
        Span(trace_id=TRACE, span_id=SPAN, parent_span_id=b"\x01\x02", name="short parent"),
        Span(trace_id=TRACE, span_id=SPAN, parent_span_id=bytes(8), name="zero parent"),
    )

    records, rejected = records_from_request(decode_protobuf(request.SerializeToString()))

    assert [(record.name, record.parent_id) for record in records] == [("good", None), ("zero parent", None)]
    assert rejected == [
        "resourceSpans[0].scopeSpans[0].spans[1] ('short trace'): trace id is 15 bytes, expected 16",
        "resourceSpans[0].scopeSpans[0].spans[2] ('zero trace'): trace id is all zeros",
        "resourceSpans[0].scopeSpans[0].spans[3] ('long span'): span id is 9 bytes, expected 8",
        "resourceSpans[0].scopeSpans[0].spans[4] ('zero span'): span id is all zeros",
        "resourceSpans[0].scopeSpans[0].spans[5] ('short parent'): parent span id is 2 bytes, expected 8 or none",
    ]


def test_json_ids_of_the_wrong_length_reject_the_span_not_the_batch():
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "name": "good"},
                            {"traceId": TRACE.hex()[:30], "spanId": SPAN.hex(), "name": "short"},
                            {"spanId": SPAN.hex(), "name": "no trace id"},
                        ]
                    }
                ]
            }
        ]
    }

    records, rejected = records_from_request(decode_json(json.dumps(document).encode()))

    assert [record.name for record in records] == ["good"]
    assert [reason.split(": ", 1)[1] for reason in rejected] == [
        "trace id is 15 bytes, expected 16",
        "trace id is 0 bytes, expected 16",
    ]


def test_bytes_with_invalid_utf8_are_repaired_and_nested_values_flattened():
    attributes = [
        KeyValue(key="raw", value=AnyValue(bytes_value=b"ok \xff\xfe end")),
        KeyValue(key="nothing", value=AnyValue()),
        KeyValue(
            key="nested",
            value=AnyValue(
                array_value=ArrayValue(
                    values=[
                        AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="n", value=AnyValue(int_value=-1))])),
                        AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=2.5), AnyValue()])),
                        AnyValue(bytes_value=b"\xc3\xa9"),
                    ]
                )
            ),
        ),
        KeyValue(key="empty.list", value=AnyValue(array_value=ArrayValue())),
    ]
    span = Span(trace_id=TRACE, span_id=SPAN, attributes=attributes, status=Status(code=7, message="future"))

    (record,), _ = records_from_request(decode_protobuf(request_with(span).SerializeToString()))

    assert record.attributes == {
        "raw": "ok \ufffd\ufffd end",
        "nested": ({"n": -1}, (2.5, None), "é"),
        "empty.list": (),
    }
    assert (record.status_code, record.status_message) == (SpanStatus.UNSET, "future")
