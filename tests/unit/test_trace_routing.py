"""`serve --workers` trace routing: a request split by the worker owning each trace (every valid span in
exactly one part, with its resource and scope; invalid spans in none, rejected in the whole request's words)."""

from __future__ import annotations

import os
from collections import Counter

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.pipeline import Pipeline
from otel_context.receiver.intake import OtlpIntake
from otel_context.receiver.routing import TraceRouter, split_request
from otel_context.spans.otlp import records_from_request


def attribute(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def many_traces(traces: int = 40, invalid: bool = True) -> ExportTraceServiceRequest:
    """Two resources of two scopes each, the spans of `traces` traces spread over all four, some invalid."""
    trace_ids = [os.urandom(16) for _ in range(traces)]
    request = ExportTraceServiceRequest()
    for r in range(2):
        resource_spans = request.resource_spans.add(schema_url=f"https://schema/{r}")
        resource_spans.resource.attributes.append(attribute("service.name", f"service {r}"))
        for s in range(2):
            scope_spans = resource_spans.scope_spans.add(schema_url=f"https://scope-schema/{r}/{s}")
            scope_spans.scope.name, scope_spans.scope.version = f"scope {r}.{s}", "1.0"
            for n, trace_id in enumerate(trace_ids):
                span = scope_spans.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"span {r}.{s}.{n}")
                span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
                span.attributes.append(attribute("n", str(n)))
            if invalid:
                scope_spans.spans.add(trace_id=os.urandom(8), span_id=os.urandom(8), name="short trace id")
                scope_spans.spans.add(trace_id=trace_ids[0], span_id=bytes(8), name="zero span id")
    return request


def placed_spans(request: ExportTraceServiceRequest) -> Counter:
    """Each span with what it is read with: its resource (and schema), its scope (and schema)."""
    out: Counter = Counter()
    for resource_spans in request.resource_spans:
        resource = (resource_spans.resource.SerializeToString(), resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            scope = (scope_spans.scope.SerializeToString(), scope_spans.schema_url)
            for span in scope_spans.spans:
                out[(resource, scope, span.SerializeToString())] += 1
    return out


def test_every_valid_span_is_in_exactly_one_part_that_of_its_traces_owner_with_its_resource_and_scope():
    request = many_traces()
    router = TraceRouter(1, 3, "/nonexistent")
    split = router.split(request)
    assert set(split.parts) == {1, 2, 3}  # 40 traces: every worker owns some

    records, problems = records_from_request(request)
    assert split.rejected == problems and len(problems) == 8  # the whole request's words and places
    valid = Counter({key: n for key, n in placed_spans(request).items() if b"short trace id" not in key[2]})
    valid = Counter({key: n for key, n in valid.items() if b"zero span id" not in key[2]})
    together: Counter = Counter()
    for owner, part in split.parts.items():
        for resource_spans in part.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.spans, "a part holds no empty scope"
                assert all(router.owner_of(span.trace_id) == owner for span in scope_spans.spans)
        together += placed_spans(part)
        assert records_from_request(part)[1] == []  # nothing invalid left in a part
    assert together == valid  # each valid span once, under its own resource and scope

    # what a peer converts is what the request held
    def key(record):
        return record.trace_id, record.span_id, dict(record.resource), dict(record.attributes)

    split_records = [r for part in split.parts.values() for r in records_from_request(part)[0]]
    assert sorted(map(key, split_records), key=repr) == sorted(map(key, records), key=repr)


def test_parts_waiting_for_one_owner_concatenate_into_one_request():
    """The router sends a peer the parts waiting for it as one message: their bytes, concatenated."""
    parts = [split_request(many_traces(invalid=False), lambda trace_id: 1).parts[1] for _ in range(3)]
    merged = ExportTraceServiceRequest.FromString(b"".join(part.SerializeToString() for part in parts))
    assert placed_spans(merged) == sum((placed_spans(part) for part in parts), Counter())


def test_a_request_of_one_owner_is_its_part_as_it_is():
    request = many_traces(traces=1, invalid=False)
    owner = TraceRouter(1, 2, "/nonexistent").owner_of(request.resource_spans[0].scope_spans[0].spans[0].trace_id)
    split = split_request(request, lambda trace_id: owner)
    assert split.parts == {owner: request} and split.parts[owner] is request
    assert split_request(ExportTraceServiceRequest(), lambda trace_id: 1).parts == {}


def test_the_intake_converts_only_its_own_part_and_reports_the_whole_requests_problems():
    request = many_traces()
    pipeline = Pipeline(
        resolve_settings(endpoint="http://127.0.0.1:9", token="t"), push_back=True, session_db=":memory:"
    )
    receiver = resolve_receiver_settings(port=0, grpc_port=None)
    router = TraceRouter(2, 2, "/nonexistent")
    try:
        decoded = OtlpIntake(pipeline, receiver, router=router).decode(request.SerializeToString(), False, False)
        everything, problems = records_from_request(request)
        assert decoded.problems == problems
        assert decoded.records and all(router.owner(r.trace_id) == 2 for r in decoded.records)
        assert set(decoded.elsewhere) == {1}
        theirs = records_from_request(ExportTraceServiceRequest.FromString(decoded.elsewhere[1]))[0]
        assert all(router.owner(r.trace_id) == 1 for r in theirs)
        assert sorted(r.span_id for r in decoded.records + theirs) == sorted(r.span_id for r in everything)

        unrouted = OtlpIntake(pipeline, receiver).decode(request.SerializeToString(), False, False)
        assert unrouted.elsewhere == {} and len(unrouted.records) == len(everything)
    finally:
        pipeline.shutdown(1)
