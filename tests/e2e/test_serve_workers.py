"""`otel-context serve --workers 2`: two processes on one port share the spool and the session book; a
worker killed with SIGKILL is restarted, and every thread still arrives once."""

from __future__ import annotations

import os
import re
import signal
import sys
import urllib.request

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from ..support.sidecar import SERVE_TOKEN, Process, clean_env, free_port
from ..support.threads import TOKEN, read_threads
from ..support.waiting import wait_for


def post(port: int, body: bytes) -> int:
    """One request on a connection of its own: the kernel picks the worker (SO_REUSEPORT)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {SERVE_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def bodies(capture, first: int, count: int) -> list[bytes]:
    out = []
    for n in range(first, first + count):
        spans = capture(lambda n=n: FakeListChatModel(responses=[f"answer {n}"]).invoke(f"question {n}"))
        out.append(encode_spans(spans).SerializeToString())
    return out


def the_chain(n: int) -> None:
    """A chain: its root span carries the question and answer, its model span (a child) the model."""
    model = FakeListChatModel(responses=["ok"], metadata={"ls_model_name": "fake-chat"})
    (ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()).invoke({"q": f"chain {n}"})


def test_two_workers_share_the_port_spool_and_sessions_and_a_killed_worker_is_replaced(
    local_api, client, capture, tmp_path
):
    port = free_port()
    supervisor = Process(
        [sys.executable, "-m", "otel_context.cli", "serve", "--workers", "2", "--port", str(port), "--grpc-port", "-1"],
        clean_env(
            OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN,
            OTEL_CONTEXT_SERVE_SETTLE="200",
            OTEL_CONTEXT_SERVE_STATE_DIR=str(tmp_path / "state"),
            OTEL_EXPORTER_CONTEXT_SPOOL_DIR=str(tmp_path / "spool"),
        ),
        ready="otel-context serve: 2 workers",
    )
    try:
        pids = [int(p) for p in re.search(r"pids ([0-9, ]+)\)", supervisor.text()).group(1).split(", ")]
        assert len(set(pids)) == 2
        assert all(post(port, body) == 200 for body in bodies(capture, 0, 30))
        assert wait_for(lambda: len(read_threads(client)) == 30, timeout=30)

        os.kill(pids[0], signal.SIGKILL)  # the supervisor starts a new worker in its place
        assert wait_for(lambda: "worker 1 restarted" in supervisor.text(), timeout=20), supervisor.text()[-3000:]
        assert all(post(port, body) == 200 for body in bodies(capture, 30, 30))
        assert wait_for(lambda: len(read_threads(client)) == 60, timeout=30)

        # traces whose spans come in two requests, each on a connection of its own: whichever workers
        # take them, each trace is assembled whole by the worker that owns it
        for n in range(10):
            spans = capture(lambda n=n: the_chain(n))
            children = [s for s in spans if s.parent is not None]
            roots = [s for s in spans if s.parent is None]
            assert children and roots
            assert post(port, encode_spans(children).SerializeToString()) == 200
            assert post(port, encode_spans(roots).SerializeToString()) == 200
        assert wait_for(lambda: len(read_threads(client)) == 70, timeout=30)
        chains = [t for t in read_threads(client) if t.metadata.get("workflow") == "RunnableSequence"]
        assert len(chains) == 10
        assert all(t.metadata.get("model") == "fake-chat" for t in chains), [t.metadata for t in chains]
    finally:
        log = supervisor.stop()
    answers = sorted(t.messages[-1].message for t in read_threads(client) if t.messages[-1].message != "ok")
    assert answers == sorted(f"answer {n}" for n in range(60)), "a thread is missing or came twice"
    received = [int(n) for n in re.findall(r"\(worker \d\): received (\d+) span", log)]
    assert len(received) == 2 and all(received), f"both workers must have taken requests:\n{log[-3000:]}"
    assert "stopped 2 workers" in log
