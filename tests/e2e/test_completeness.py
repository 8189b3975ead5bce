"""Trace completeness, reported: a thread built from a trace known to be incomplete says so, and the
sidecar answers what it refused in OTLP `partial_success`. Captured spans of real LangChain runs,
replayed through the exporter and the sidecar."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_context import ContextSpanExporter
from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from ..support.threads import TOKEN, read_threads, texts
from .test_receiver import otlp_json


class Replay:
    """Sends captured spans, one request per span in the order they ended, in process or to the sidecar."""

    def __init__(self, exporter: ContextSpanExporter | None, sidecar: SidecarThread | None) -> None:
        self.exporter, self.sidecar = exporter, sidecar
        self.running = sidecar.start() if sidecar is not None else None
        self.pipeline = exporter.pipeline if exporter is not None else self.running.pipeline  # type: ignore[union-attr]

    def send(self, spans: list) -> None:
        for span in spans:
            if self.exporter is not None:
                self.exporter.export([span])
                continue
            url = f"{self.running.http_url}/v1/traces"  # type: ignore[union-attr]
            request = urllib.request.Request(url, data=encode_spans([span]).SerializeToString(), method="POST")
            request.add_header("Content-Type", "application/x-protobuf")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200

    def finish(self) -> None:
        if self.exporter is not None:
            self.exporter.shutdown()
        else:
            assert self.sidecar is not None and self.sidecar.stop() == 0


def make_replay(kind: str, local_api, tmp_path, **settings: object) -> Replay:
    settings.update(endpoint=local_api.url, token=TOKEN)
    if kind == "exporter":
        return Replay(ContextSpanExporter(register_metrics=False, **settings), None)
    receiver = resolve_receiver_settings(port=0, grpc_port=-1, settle_s=0.1, state_dir=str(tmp_path))
    return Replay(None, SidecarThread(receiver, resolve_settings(**settings)))


@pytest.fixture(params=["exporter", "sidecar"])
def replay(request, local_api, tmp_path) -> Iterator:
    yield lambda **settings: make_replay(request.param, local_api, tmp_path, **settings)


def run_with_a_step(capture) -> list:
    model = FakeListChatModel(responses=["Paris."])
    step = RunnableLambda(lambda question: model.invoke(question).content).with_config(run_name="ask_model")
    return capture(lambda: (step | RunnableLambda(str.strip)).invoke("Capital of France?"))


def test_a_root_whose_branch_never_came_is_marked_incomplete(replay, capture, client):
    spans = run_with_a_step(capture)
    pipeline = replay()
    pipeline.send([s for s in spans if s.name != "execute_task ask_model"])  # the step above the model call is lost
    pipeline.finish()
    (thread,) = read_threads(client)
    assert (thread.metadata["incomplete"], thread.metadata["incomplete_reason"]) == ("true", "missing_parent")
    assert pipeline.pipeline.counters.get("threads_incomplete") == 1


def test_a_root_after_its_children_were_evicted_is_marked_incomplete(replay, capture, client):
    spans = run_with_a_step(capture)
    root = next(s for s in spans if s.parent is None)
    pipeline = replay(pending_ttl_s=0.2)
    pipeline.send([s for s in spans if s is not root])
    time.sleep(0.4)
    pipeline.send(capture(lambda: RunnableLambda(str.upper).invoke("another run")))  # any batch evicts
    pipeline.send([root])
    pipeline.finish()
    first, _ = read_threads(client)
    assert texts(first)[0] == ("message", "user", "Capital of France?")
    assert first.metadata["incomplete_reason"] == "evicted"
    counters = pipeline.pipeline.counters
    assert counters.get("traces_evicted") == 1 and counters.get("spans_evicted") == 3
    assert counters.get("threads_incomplete") == 1


def test_a_complete_trace_is_not_marked(replay, capture, client):
    pipeline = replay()
    pipeline.send(run_with_a_step(capture))
    pipeline.finish()
    (thread,) = read_threads(client)
    assert "incomplete" not in thread.metadata


def test_the_sidecar_answers_and_counts_refused_spans(local_api, tmp_path, capture, client):
    pipeline = make_replay("sidecar", local_api, tmp_path)
    data = json.loads(otlp_json(run_with_a_step(capture)))
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append(dict(spans[0], spanId="00" * 8))
    request = urllib.request.Request(
        f"{pipeline.running.http_url}/v1/traces", data=json.dumps(data).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())["partialSuccess"]
    assert answer["rejectedSpans"] == "1" and "span id" in answer["errorMessage"]
    pipeline.finish()
    assert pipeline.pipeline.counters.get("spans_rejected") == 1
    assert len(read_threads(client)) == 1
