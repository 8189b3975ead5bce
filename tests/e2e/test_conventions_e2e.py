"""Every convention end to end: captured and constructed spans replayed through the real exporter and
the real sidecar (OTLP/HTTP), read back from the local Context API with `context-python`."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_context import ContextSpanExporter
from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread
from otel_context.spans.sdk_json import load_json_file

from ..support.paths import FIXTURES, REFERENCE_SPANS
from ..support.threads import TOKEN, read_threads
from ..support.waiting import wait_for

FILES = sorted(
    [
        *REFERENCE_SPANS.glob("*.json"),
        *(FIXTURES / "openinference").glob("*.json"),
        *(FIXTURES / "genai").glob("*.json"),
    ]
)


def _ns(text: str) -> int:
    from otel_context.model import parse_iso8601

    return parse_iso8601(text)


def readable_spans(path: Path) -> list[ReadableSpan]:
    """The SDK spans a `to_json()` dump was printed from."""
    spans = []
    for data in json.loads(path.read_text(encoding="utf-8")):
        trace_id = int(data["context"]["trace_id"], 16)
        context = SpanContext(trace_id, int(data["context"]["span_id"], 16), False, TraceFlags(1))
        parent = data.get("parent_id")
        status = data.get("status") or {}
        spans.append(
            ReadableSpan(
                name=data["name"],
                context=context,
                parent=SpanContext(trace_id, int(parent, 16), False, TraceFlags(1)) if parent else None,
                resource=Resource(data.get("resource", {}).get("attributes", {})),
                attributes=data.get("attributes") or {},
                events=[
                    Event(e["name"], e.get("attributes") or {}, _ns(e["timestamp"])) for e in data.get("events") or ()
                ],
                kind=SpanKind[data.get("kind", "SpanKind.INTERNAL").split(".")[-1]],
                status=Status(StatusCode[status.get("status_code", "UNSET")], status.get("description")),
                start_time=_ns(data["start_time"]),
                end_time=_ns(data["end_time"]),
            )
        )
    return spans


def expected_threads(path: Path):
    buffer = TraceBuffer()
    return buffer.add(load_json_file(path)) + buffer.drain()


def assert_same(stored, expected) -> None:
    assert len(stored) == len(expected)
    by_first = {json.dumps([(m.type, m.role, m.text) for m in t.messages]): t for t in expected}
    for thread in stored:
        key = json.dumps([(m.type, m.role, m.message) for m in thread.messages])
        assert key in by_first, f"unexpected thread {key}"
        wanted = by_first[key].metadata
        # a session thread keeps the run's own facts on its last message, the session's on the thread
        found = {**(thread.messages[-1].metadata or {}), **(thread.metadata or {})}
        assert {k: found.get(k) for k in wanted} == wanted


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_through_the_exporter(path, local_api, client):
    exporter = ContextSpanExporter(endpoint=local_api.url, token=TOKEN, register_metrics=False, include_tools=False)
    for span in readable_spans(path):  # one batch per span, in the order they ended
        exporter.export([span])
    exporter.shutdown()
    assert_same(read_threads(client), expected_threads(path))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_through_the_sidecar(path, local_api, client, tmp_path):
    receiver = resolve_receiver_settings(port=0, grpc_port=-1, settle_s=0.2, state_dir=str(tmp_path))
    expected = expected_threads(path)
    # A provider's model span waits `root_wait_s` for a LangChain span to claim it: keep that short here.
    delivery = resolve_settings(endpoint=local_api.url, token=TOKEN, root_wait_s=1.0)
    with SidecarThread(receiver, delivery) as sidecar:
        spans = readable_spans(path)
        random.Random(5).shuffle(spans)  # any order, as spans from many services arrive
        for span in spans:
            request = urllib.request.Request(
                f"{sidecar.http_url}/v1/traces", data=encode_spans([span]).SerializeToString(), method="POST"
            )
            request.add_header("Content-Type", "application/x-protobuf")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        assert wait_for(lambda: sidecar.pipeline.counters.get("threads_uploaded") >= len(expected), timeout=30)
    assert_same(read_threads(client), expected)
