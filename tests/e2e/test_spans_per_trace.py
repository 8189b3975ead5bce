"""`otel-context serve` holds at most OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE spans of a trace whose root has
not come: a flood of one rootless trace is evicted and counted, and the root, when it comes, still gets its
thread from the spans kept (the newest).

The trace is a real LangChain run (OpenLLMetry), sent as OTLP/protobuf to a real sidecar process: first
its model span cloned 3,000 times (clone i reporting i + 1 input tokens, so the thread's total says which
clones were kept), then the run itself, root last.
"""

from __future__ import annotations

import urllib.request

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ..support.sidecar import SERVE_TOKEN, serve, serve_counters
from ..support.threads import dialogue, read_threads
from ..support.waiting import wait_for

BOUND = 500
CLONES = 3000
PER_REQUEST = 1000


def company_chain() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
    (prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()).invoke({"product": "socks"})


def model_call_clones(run: ExportTraceServiceRequest, first: int, count: int) -> ExportTraceServiceRequest:
    """Clones `first` .. `first + count - 1` of the run's model span, each under the same (absent) root."""
    request = ExportTraceServiceRequest()
    request.CopyFrom(run)
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            chats = [span for span in scope.spans if span.name.endswith(".chat")]
            del scope.spans[:]
            for chat in chats:
                for number in range(first, first + count):
                    clone = scope.spans.add()
                    clone.CopyFrom(chat)
                    clone.span_id = (0x10_0000 + number).to_bytes(8, "big")
                    clone.attributes.append(KeyValue(key="gen_ai.usage.input_tokens"))
                    clone.attributes[-1].value.int_value = number + 1
    assert sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans) == count
    return request


def post(port: int, request: ExportTraceServiceRequest) -> int:
    http = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {SERVE_TOKEN}"},
    )
    with urllib.request.urlopen(http, timeout=60) as response:
        return response.status


def test_a_rootless_flood_is_bounded_and_the_root_still_makes_its_thread(local_api, client, capture, tmp_path):
    run = encode_spans(capture(company_chain))
    sidecar, port = serve(local_api, tmp_path / "state", OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE=str(BOUND))
    try:
        for first in range(0, CLONES, PER_REQUEST):
            assert post(port, model_call_clones(run, first, PER_REQUEST)) == 200
        # answered once queued: conversion runs on the intake queue's thread, a moment later
        assert wait_for(lambda: serve_counters(port)["spans_evicted"] == CLONES - BOUND, timeout=30)
        counters = serve_counters(port)
        assert counters["spans_held"] == BOUND, counters
        assert counters["spans_evicted"] == CLONES - BOUND, counters
        assert counters["traces_evicted"] == 0  # the trace itself is kept: its root may still come

        assert post(port, run) == 200  # the run itself, root last: its 3 steps push 3 more clones out
        assert wait_for(lambda: len(read_threads(client)) == 1, timeout=30)
        (thread,) = read_threads(client)
        assert dialogue(thread) == [
            ("user", "socks"),  # a chain asks with its input, answers with its output
            ("assistant", "Rainbow Threads"),
        ]
        kept = range(CLONES - BOUND + 3, CLONES)  # the newest clones, numbered from 0
        assert thread.metadata["input_tokens"] == str(sum(number + 1 for number in kept))
        assert thread.metadata["incomplete"] == "true"
        assert thread.metadata["incomplete_reason"] == "evicted"
        counters = serve_counters(port)
        assert counters["spans_evicted"] == CLONES - BOUND + 3
        assert counters["spans_held"] == 0
        assert counters["threads_uploaded"] == 1
    finally:
        log = sidecar.stop()
    assert log.count("OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE") == 1, log  # said once, counted always
