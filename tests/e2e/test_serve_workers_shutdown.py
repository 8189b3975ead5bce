"""SIGTERM to `otel-context serve --workers 2` stops it without a traceback (issue 21: every shutdown of
workers that had passed each other spans logged a `CancelledError` from the trace router)."""

from __future__ import annotations

import os
import sys
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..support.sidecar import Process, clean_env, free_port
from ..support.threads import TOKEN


def spans_of_many_traces(count: int) -> bytes:
    """Root spans of `count` random traces: whichever worker takes them, about half belong to the other."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for _ in range(count):
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="not a chain")
        span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    return request.SerializeToString()


def test_sigterm_after_workers_passed_each_other_spans_logs_no_traceback(local_api, tmp_path):
    port = free_port()
    supervisor = Process(
        [sys.executable, "-m", "otel_context.cli", "serve", "--workers", "2", "--port", str(port), "--grpc-port", "-1"],
        clean_env(
            OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_CONTEXT_SERVE_SETTLE="100",
            OTEL_CONTEXT_SERVE_STATE_DIR=str(tmp_path / "state"),
        ),
        ready="otel-context serve: 2 workers",
    )
    try:
        for _ in range(6):  # a connection each: the workers open connections to each other to pass spans on
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/traces",
                data=spans_of_many_traces(20),
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
    finally:
        log = supervisor.stop()  # SIGTERM
    assert supervisor.proc.returncode == 0, log[-3000:]
    assert "stopped 2 workers" in log
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
