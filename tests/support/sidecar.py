"""What the sidecar end-to-end tests share, whichever Collector sits in front of `otel-context serve`.

The app (LangChain with fake chat models, instrumented by OpenLLMetry), `otel-context serve` as a
child process delivering to the local Context API, the in-process exporter's threads for the same
spans, and a comparable snapshot of threads.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_context import ContextSpanExporter
from otel_context.local_api import LocalContextAPI

from .paths import REPO
from .threads import TOKEN, read_threads
from .waiting import wait_for

SERVE_TOKEN = "sidecar-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "ROTEL_"))}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


class Process:
    """A child process stopped with SIGTERM at the end, its output kept for failure messages.

    The output goes to a file, not a pipe: a chatty child (a Collector logging every retry) would
    block on a full pipe that nobody reads until the end.
    """

    def __init__(self, args: list[str], env: dict[str, str], ready: str | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="otel-context-test-", suffix=".log")
        self.output = Path(name)  # read through its own handle; removed in stop(), which every user calls
        self.log: str | None = None
        with os.fdopen(fd, "wb") as out:
            self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        if ready:
            deadline = time.monotonic() + 30
            while "\n" not in self.text() and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            first_line = self.text().split("\n", 1)[0]
            assert ready in first_line, self.text()[:2000]

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> str:
        """Stop the process (once) and return all it wrote."""
        if self.log is not None:
            return self.log
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log = self.text()
        self.output.unlink(missing_ok=True)
        return self.log


def serve(local_api: LocalContextAPI, state_dir: Path, **delivery: str) -> tuple[Process, int]:
    """`otel-context serve` on a free port (HTTP only), requiring SERVE_TOKEN, delivering to `local_api`."""
    port = free_port()
    process = Process(
        [sys.executable, "-m", "otel_context.cli", "serve", "--port", str(port), "--grpc-port", "-1"],
        clean_env(
            OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN,
            OTEL_CONTEXT_SERVE_SETTLE="300",
            OTEL_CONTEXT_SERVE_STATE_DIR=str(state_dir),
            **delivery,
        ),
        ready="otel-context serve:",
    )
    return process, port


def serve_counters(port: int) -> dict[str, int]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stats", headers={"Authorization": f"Bearer {SERVE_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["counters"]


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


def in_process_threads(spans) -> list:
    """What the in-process exporter makes of the same spans, read back through the real client.

    Its session book is shared (SQLite) like the sidecar's, so session threads have the same ids.
    """
    import tempfile

    from getcontext import ContextAPI
    from getcontext.token import Credential

    with LocalContextAPI(token=TOKEN) as reference_api, tempfile.TemporaryDirectory() as state:
        exporter = ContextSpanExporter(
            endpoint=reference_api.url, token=TOKEN, register_metrics=False, session_db=f"{state}/sessions.db"
        )
        exporter.export(spans)
        exporter.shutdown()
        reference = ContextAPI(credential=Credential(TOKEN), endpoint=reference_api.url, retry_total=0)
        try:
            return read_threads(reference)
        finally:
            reference.close()


def snapshot(threads) -> list[tuple]:
    return sorted(
        (t.id, json.dumps(t.metadata, sort_keys=True), tuple((m.type, m.role, m.message) for m in t.messages))
        for t in threads
    )


def exporter_for(protocol: str, pipeline: dict):
    """The standard OTLP exporter an app would use, pointed at the collector's gRPC or HTTP port."""
    if protocol == "grpc":
        return GrpcExporter(endpoint=f"127.0.0.1:{pipeline['grpc']}", insecure=True)
    return HttpExporter(endpoint=f"http://127.0.0.1:{pipeline['http']}/v1/traces")


def assert_sent_equals_in_process(exporter, spans, client, count: int = 3) -> None:
    """Export `spans` through the collector path; the `count` threads stored equal the in-process exporter's."""
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert wait_for(lambda: len(read_threads(client)) == count, timeout=30)
    through_collector = read_threads(client)
    expected = in_process_threads(spans)  # the same spans, in process
    assert len(expected) == count
    assert snapshot(through_collector) == snapshot(expected)


def assert_pushed_back_and_nothing_lost(
    pipeline: dict, local_api: LocalContextAPI, capture, client, protocols: tuple[str, ...], pause_s: float
) -> None:
    """Context slow and the sidecar's queue tiny (the `pipeline` fixture's delivery settings): 12 chat calls
    sent through the collector in separate batches (`pause_s` apart, alternating over `protocols`) are all
    stored, after the sidecar pushed back at least once and dropped nothing."""
    local_api.set_faults(latency_s=0.5)  # Context is slow: the sidecar's tiny queue fills at once
    exporters = {protocol: exporter_for(protocol, pipeline) for protocol in protocols}
    for n in range(12):
        spans = capture(lambda n=n: FakeListChatModel(responses=[f"answer {n}"]).invoke(f"question {n}"))
        assert exporters[protocols[n % len(protocols)]].export(spans) is SpanExportResult.SUCCESS
        time.sleep(pause_s)  # separate collector batches: separate requests to the sidecar
    for exporter in exporters.values():
        exporter.shutdown()
    assert wait_for(lambda: len(read_threads(client)) == 12, timeout=90)
    answers = sorted(t.messages[-1].message for t in read_threads(client))
    assert answers == sorted(f"answer {n}" for n in range(12))
    counters = serve_counters(pipeline["serve"])
    assert counters["requests_pushed_back"] > 0, "the sidecar never pushed back: the test proved nothing"
    assert counters["threads_dropped"] == 0, counters
