"""Evaluation results recorded as log records: decoded from OTLP logs, matched to their run in assembly."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.conversion.evaluations import Evaluation, parse_rules
from otel_context.conversion.threads import ConversionOptions
from otel_context.model import LogEvent, SpanRecord
from otel_context.spans.otlp import OtlpDecodeError
from otel_context.spans.otlp_limits import RequestLimits, RequestTooLarge
from otel_context.spans.otlp_logs import decode_logs_json, decode_logs_protobuf, events_from_logs

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
RESULT = "gen_ai.evaluation.result"


def chain(span_id: int, start: int, *, question: str = "Capital of France?", answer: str = "Paris") -> list[SpanRecord]:
    """An OpenLLMetry chain root (workflow) with one model call under it."""
    io = {
        "traceloop.entity.input": json.dumps({"inputs": {"question": question}}),
        "traceloop.entity.output": json.dumps({"outputs": answer}),
    }
    model = SpanRecord(
        TRACE,
        span_id + 1,
        span_id,
        "ChatOpenAI.chat",
        start + 10,
        start + 20,
        {"traceloop.workflow.name": "RunnableSequence", "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o"},
    )
    root = SpanRecord(
        TRACE,
        span_id,
        None,
        "RunnableSequence.workflow",
        start,
        start + 30,
        {"traceloop.span.kind": "workflow", "traceloop.workflow.name": "RunnableSequence", **io},
    )
    return [model, root]


def relevance(score: float, at: int = 0) -> Evaluation:
    return Evaluation("relevance", score, timestamp_ns=at)


def buffer(**kwargs) -> TraceBuffer:
    return TraceBuffer(options=ConversionOptions(eval_rules=parse_rules("relevance>=0.7")), **kwargs)


def test_a_record_that_comes_first_waits_for_its_run():
    spans = buffer()
    assert spans.add_evaluations([(TRACE, 0x11, relevance(0.9))]) == []  # the model call of the run to come
    (thread,) = spans.add(chain(0x10, 1_000))
    assert thread.metadata["eval.relevance"] == "0.9" and thread.metadata["eval_rating"] == "1"
    assert thread.messages[-1].rating == 1


def test_records_join_the_run_whose_span_they_name_in_a_trace_of_several_runs():
    spans = buffer()
    spans.add_evaluations([(TRACE, 0x21, relevance(0.2)), (TRACE, 0x11, relevance(0.9))])
    first, second = spans.add(chain(0x10, 1_000)) + spans.add(chain(0x20, 2_000, answer="Lyon"))
    assert (first.metadata["eval.relevance"], second.metadata["eval.relevance"]) == ("0.9", "0.2")
    assert (first.messages[-1].rating, second.messages[-1].rating) == (1, -1)


def test_a_record_of_a_run_built_already_is_late_and_names_its_root():
    spans = buffer()
    spans.add(chain(0x10, 1_000))
    spans.add_evaluations([])  # from now on the spans of built runs are remembered
    spans.add(chain(0x20, 2_000))
    late = spans.add_evaluations(
        [(TRACE, 0x21, relevance(0.1)), (TRACE, 0x11, relevance(0.8)), (TRACE, None, relevance(0.5))]
    )
    # 0x21 is remembered; 0x11's run was built before: the trace's last run, as is a record naming no span
    assert [(trace, root) for trace, root, _ in late] == [(TRACE, 0x20), (TRACE, 0x20), (TRACE, 0x20)]


def test_a_record_whose_run_never_comes_is_counted_unmatched():
    now = [0.0]
    spans = buffer(max_age_s=60, clock=lambda: now[0])
    spans.add_evaluations([(TRACE, 0x11, relevance(0.9))])
    now[0] = 61.0
    spans.add([])
    assert spans.counters.get("evaluations_unmatched") == 1
    assert spans.add(chain(0x10, 1_000))[0].metadata.get("eval.relevance") is None


def request_with(**fields) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(**fields)
    return request


def test_events_are_named_by_event_name_or_the_event_name_attribute_and_plain_lines_skipped():
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    record = scope.log_records.add(event_name=RESULT, trace_id=TRACE.to_bytes(16, "big"), span_id=b"\x00" * 7 + b"\x11")
    record.attributes.add(key="gen_ai.evaluation.name").value.string_value = "relevance"
    older = scope.log_records.add(time_unix_nano=5)
    older.attributes.add(key="event.name").value.string_value = RESULT
    entry = older.body.kvlist_value.values.add(key="gen_ai.evaluation.name")
    entry.value.string_value = "groundedness"  # the payload in the body, as some emitters write it
    scope.log_records.add().body.string_value = "a plain log line"
    events, problems = events_from_logs(decode_logs_protobuf(request.SerializeToString()))
    assert problems == []
    assert events == [
        LogEvent(RESULT, 0, {"gen_ai.evaluation.name": "relevance"}, TRACE, 0x11),
        LogEvent(RESULT, 5, {"gen_ai.evaluation.name": "groundedness"}, None, None),
    ]


def test_json_logs_read_hex_ids_and_snake_case_and_refuse_bad_ids():
    body = {
        "resource_logs": [
            {
                "scope_logs": [
                    {
                        "log_records": [
                            {"event_name": RESULT, "trace_id": f"{TRACE:032X}", "span_id": "0000000000000011"},
                            {"eventName": RESULT, "traceId": "0102"},
                        ]
                    }
                ]
            }
        ]
    }
    events, problems = events_from_logs(decode_logs_json(json.dumps(body).encode()))
    assert [(e.trace_id, e.span_id) for e in events] == [(TRACE, 0x11)]
    assert problems == ["resourceLogs[0].scopeLogs[0].logRecords[1]: trace id is 2 bytes, expected 16 or none"]
    with pytest.raises(OtlpDecodeError, match="expected 32 hex characters"):
        decode_logs_json(b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}')


def test_log_records_count_against_the_span_limit_in_both_encodings():
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for _ in range(10):
        scope.log_records.add(event_name=RESULT)
    limits = RequestLimits(max_spans=8)
    with pytest.raises(RequestTooLarge):
        decode_logs_protobuf(request.SerializeToString(), limits)
    with pytest.raises(RequestTooLarge):
        decode_logs_json(json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * 10}]}]}).encode(), limits)


def test_invalid_utf8_is_repaired_not_refused():
    request = request_with(event_name=RESULT)
    request.resource_logs[0].scope_logs[0].log_records[0].attributes.add(
        key="gen_ai.evaluation.name"
    ).value.string_value = "ok"
    body = request.SerializeToString().replace(b"ok", b"o\xff")
    (event,), _ = events_from_logs(decode_logs_protobuf(body))
    assert event.attributes["gen_ai.evaluation.name"] == "o\ufffd"
