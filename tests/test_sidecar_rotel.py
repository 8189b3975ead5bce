"""A real collector end to end: app -> OTLP (gRPC and HTTP) -> rotel -> otel-context serve -> Context.

The official Collector binary is not on the package registries these machines reach; `rotel` (PyPI,
a Rust OTLP collector) is. The threads read back must equal what the in-process exporter makes of
the very same spans.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_context import ContextSpanExporter
from otel_context.local_api import LocalContextAPI

from .conftest import REPO, TOKEN, read_threads, wait_for

rotel = pytest.importorskip("rotel")
ROTEL = Path(rotel.__file__).with_name("rotel-agent")
SERVE_TOKEN = "sidecar-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "ROTEL_"))}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


class Process:
    """A child process stopped with SIGTERM at the end, its output kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str | None = None) -> None:
        self.proc = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.first_line = self.proc.stdout.readline() if ready else ""
        if ready:
            assert ready in self.first_line, self.first_line + self.proc.stdout.read(2000)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


@pytest.fixture
def pipeline(local_api: LocalContextAPI, request, tmp_path):
    """otel-context serve (a process) behind rotel (a process); yields rotel's gRPC and HTTP ports."""
    delivery = getattr(request, "param", {})
    serve_port = free_port()
    serve = Process(
        [sys.executable, "-m", "otel_context.cli", "serve", "--port", str(serve_port), "--grpc-port", "-1"],
        clean_env(
            OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN,
            OTEL_CONTEXT_SERVE_SETTLE="300",
            OTEL_CONTEXT_SERVE_STATE_DIR=str(tmp_path),
            **delivery,
        ),
        ready="otel-context serve:",
    )
    grpc_port, http_port = free_port(), free_port()
    collector = Process(
        rotel_command(grpc_port, http_port, serve_port),
        # the binary links libpython3.11: point it at the interpreter that runs the tests
        clean_env(LD_LIBRARY_PATH=os.path.join(sys.base_prefix, "lib")),
    )
    assert wait_for(lambda: _listening(grpc_port) and _listening(http_port), timeout=20), collector.stop()
    info = {"grpc": grpc_port, "http": http_port, "serve": serve_port}
    yield info
    collector_log = collector.stop()
    serve_log = serve.stop()
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


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def the_app() -> None:
    """The seed's two examples and a chain with a user, a session and token usage."""
    FakeListChatModel(responses=["J'adore la programmation."]).invoke(
        [SystemMessage("You are a helpful assistant that translates English to French."), HumanMessage("I love it.")]
    )
    prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
    (prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()).invoke({"product": "socks"})
    reply = AIMessage("Tomorrow.", usage_metadata={"input_tokens": 9, "output_tokens": 2, "total_tokens": 11})
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | GenericFakeChatModel(messages=iter([reply]))
    chain.invoke({"q": "When does it ship?"}, config={"metadata": {"user_id": "u-1", "session_id": "s-1"}})


def snapshot(threads) -> list[tuple]:
    return sorted(
        (t.id, json.dumps(t.metadata, sort_keys=True), tuple((m.type, m.role, m.message) for m in t.messages))
        for t in threads
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_threads_through_rotel_equal_the_in_process_exporter(pipeline, capture, client, protocol, tmp_path):
    spans = capture(the_app)
    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{pipeline['grpc']}", insecure=True)
    else:
        exporter = HttpExporter(endpoint=f"http://127.0.0.1:{pipeline['http']}/v1/traces")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert wait_for(lambda: len(read_threads(client)) == 3, timeout=30)
    through_sidecar = read_threads(client)

    with LocalContextAPI(token=TOKEN) as reference_api:  # the same spans, in process
        # a session book shared like the sidecar's (SQLite), so session threads have the same ids
        in_process = ContextSpanExporter(
            endpoint=reference_api.url, token=TOKEN, register_metrics=False, session_db=str(tmp_path / "s.db")
        )
        in_process.export(spans)
        in_process.shutdown()
        from getcontext import ContextAPI
        from getcontext.token import Credential

        reference = ContextAPI(credential=Credential(TOKEN), endpoint=reference_api.url, retry_total=0)
        expected = read_threads(reference)
    assert len(expected) == 3
    assert snapshot(through_sidecar) == snapshot(expected)


@pytest.mark.parametrize(
    "pipeline",
    [{"OTEL_EXPORTER_CONTEXT_QUEUE_SIZE": "2", "OTEL_EXPORTER_CONTEXT_CONCURRENCY": "1"}],
    indirect=True,
)
def test_backpressure_makes_the_collector_retry_and_nothing_is_lost(pipeline, local_api, capture, client):
    local_api.set_faults(latency_s=0.5)  # Context is slow: the sidecar's tiny queue fills at once
    exporter = GrpcExporter(endpoint=f"127.0.0.1:{pipeline['grpc']}", insecure=True)
    for n in range(12):
        spans = capture(lambda n=n: FakeListChatModel(responses=[f"answer {n}"]).invoke(f"question {n}"))
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        time.sleep(0.15)  # separate collector batches
    exporter.shutdown()
    assert wait_for(lambda: len(read_threads(client)) == 12, timeout=90)
    answers = sorted(t.messages[-1].message for t in read_threads(client))
    assert answers == sorted(f"answer {n}" for n in range(12))
    request = urllib.request.Request(
        f"http://127.0.0.1:{pipeline['serve']}/stats", headers={"Authorization": f"Bearer {SERVE_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        counters = json.load(response)["counters"]
    assert counters["requests_pushed_back"] > 0, "the sidecar never pushed back: the test proved nothing"
    assert counters["threads_dropped"] == 0
