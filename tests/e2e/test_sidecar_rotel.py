"""A second, independent peer end to end: app -> OTLP (gRPC and HTTP) -> rotel -> otel-context serve -> Context.

`tests/e2e/test_sidecar_otelcol.py` runs the same path through the OpenTelemetry Collector built here;
this one runs it through `rotel` (PyPI, a Rust OTLP collector), so the sidecar is checked against two
collectors that share no code. The threads read back must equal what the in-process exporter makes
of the very same spans.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from otel_context.local_api import LocalContextAPI

from ..support.sidecar import (
    SERVE_TOKEN,
    Process,
    assert_pushed_back_and_nothing_lost,
    assert_sent_equals_in_process,
    clean_env,
    exporter_for,
    free_port,
    listening,
    serve,
    the_app,
)
from ..support.waiting import wait_for

rotel = pytest.importorskip("rotel")
ROTEL = Path(rotel.__file__).with_name("rotel-agent")


@pytest.fixture
def pipeline(local_api: LocalContextAPI, request, tmp_path):
    """otel-context serve (a process) behind rotel (a process); yields rotel's gRPC and HTTP ports."""
    delivery = getattr(request, "param", {})
    sidecar, serve_port = serve(local_api, tmp_path, **delivery)
    grpc_port, http_port = free_port(), free_port()
    collector = Process(
        rotel_command(grpc_port, http_port, serve_port),
        # the binary links libpython3.11: point it at the interpreter that runs the tests
        clean_env(LD_LIBRARY_PATH=os.path.join(sys.base_prefix, "lib")),
    )
    assert wait_for(lambda: listening(grpc_port) and listening(http_port), timeout=20), collector.stop()
    info = {"grpc": grpc_port, "http": http_port, "serve": serve_port}
    yield info
    collector_log = collector.stop()
    serve_log = sidecar.stop()
    info["logs"] = collector_log + serve_log


def rotel_command(grpc_port: int, http_port: int, serve_port: int) -> list[str]:
    """rotel receiving OTLP gRPC and HTTP, forwarding OTLP/HTTP to the sidecar with its bearer token."""
    flags = {
        "--otlp-grpc-endpoint": f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint": f"127.0.0.1:{http_port}",
        "--exporter": "otlp",
        "--otlp-exporter-protocol": "http",
        "--otlp-exporter-endpoint": f"http://127.0.0.1:{serve_port}",
        "--otlp-exporter-custom-headers": f"Authorization=Bearer {SERVE_TOKEN}",
        "--batch-timeout": "100ms",
        "--otlp-exporter-retry-initial-backoff": "200ms",
        "--otlp-exporter-retry-max-backoff": "1s",
        "--otlp-exporter-retry-max-elapsed-time": "120s",
    }
    return [str(ROTEL), "start", *(part for pair in flags.items() for part in pair)]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_threads_through_rotel_equal_the_in_process_exporter(pipeline, capture, client, protocol):
    assert_sent_equals_in_process(exporter_for(protocol, pipeline), capture(the_app), client)


@pytest.mark.parametrize(
    "pipeline",
    [{"OTEL_EXPORTER_CONTEXT_QUEUE_SIZE": "2", "OTEL_EXPORTER_CONTEXT_CONCURRENCY": "1"}],
    indirect=True,
)
def test_backpressure_makes_rotel_retry_and_nothing_is_lost(pipeline, local_api, capture, client):
    assert_pushed_back_and_nothing_lost(pipeline, local_api, capture, client, ("grpc",), pause_s=0.15)
