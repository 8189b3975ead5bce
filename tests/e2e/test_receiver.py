"""The sidecar: OTLP over HTTP and gRPC in, the same threads out as the in-process exporter makes."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
from google.protobuf import json_format
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from ..support.paths import REPO
from ..support.threads import TOKEN, read_threads, texts
from ..support.waiting import wait_for

SERVE_TOKEN = "collector-secret"


def company_chain(answer: str = "Rainbow Threads"):
    reply = AIMessage(answer, usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10})
    prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
    return prompt | GenericFakeChatModel(messages=iter([reply])) | StrOutputParser()


@pytest.fixture
def sidecar(local_api, request, tmp_path):
    options = getattr(request, "param", {})
    receiver = resolve_receiver_settings(
        port=0, grpc_port=0, token=SERVE_TOKEN, settle_s=0.3, state_dir=str(tmp_path), **options
    )
    delivery = resolve_settings(endpoint=local_api.url, token=TOKEN, retry_initial_s=0.1, retry_max_s=0.5)
    with SidecarThread(receiver, delivery) as running:
        yield running


def post(
    sidecar, body: bytes, content_type: str = "application/x-protobuf", token: str | None = SERVE_TOKEN, **headers
):
    request = urllib.request.Request(f"{sidecar.http_url}/v1/traces", data=body, method="POST")
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def otlp_json(spans) -> bytes:
    """The OTLP/JSON encoding of SDK spans: protobuf's JSON mapping with ids in hex, as the spec says."""
    data = json_format.MessageToDict(encode_spans(spans))
    for resource in data["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    return json.dumps(data).encode()


def test_protobuf_from_the_standard_otlp_http_exporter(sidecar, capture, client):
    spans = capture(lambda: company_chain().invoke({"product": "colorful socks"}))
    exporter = HttpExporter(
        endpoint=f"{sidecar.http_url}/v1/traces", headers={"Authorization": f"Bearer {SERVE_TOKEN}"}
    )
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert wait_for(lambda: len(read_threads(client)) == 1)
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]
    assert thread.metadata["total_tokens"] == "10"


def test_grpc_from_the_standard_otlp_grpc_exporter(sidecar, capture, client):
    spans = capture(lambda: FakeListChatModel(responses=["bonjour"]).invoke("hello"))
    exporter = GrpcExporter(
        endpoint=f"127.0.0.1:{sidecar.grpc_port}", insecure=True, headers={"authorization": f"Bearer {SERVE_TOKEN}"}
    )
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert wait_for(lambda: len(read_threads(client)) == 1)
    assert texts(read_threads(client)[0]) == [("message", "user", "hello"), ("message", "assistant", "bonjour")]


def test_grpc_without_token_is_unauthenticated(sidecar, capture):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    spans = capture(lambda: FakeListChatModel(responses=["x"]).invoke("y"))
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Export(encode_spans(spans), timeout=10)
    assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_json_body_with_hex_ids_and_gzip(sidecar, capture, client):
    spans = capture(lambda: company_chain().invoke({"product": "hats"}))
    status, headers, body = post(sidecar, gzip.compress(otlp_json(spans)), "application/json", Content_Encoding="gzip")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {}  # a full success: an empty ExportTraceServiceResponse
    assert wait_for(lambda: len(read_threads(client)) == 1)
    assert texts(read_threads(client)[0])[0] == ("message", "user", "hats")


def test_trace_split_over_many_requests_in_shuffled_order(sidecar, capture, client):
    spans = capture(lambda: company_chain().invoke({"product": "lamps"}))
    random.Random(3).shuffle(spans)
    for span in spans:  # one request per span, the root possibly first
        status, headers, body = post(sidecar, encode_spans([span]).SerializeToString())
        assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
        ExportTraceServiceResponse.FromString(body)  # a parseable answer, as Collectors require
    assert wait_for(lambda: len(read_threads(client)) == 1)
    (thread,) = read_threads(client)
    assert texts(thread)[-1] == ("message", "assistant", "Rainbow Threads")
    assert thread.metadata["total_tokens"] == "10"  # the chat span's usage reached its root


def test_duplicate_delivery_is_harmless(sidecar, capture, client):
    spans = capture(lambda: company_chain().invoke({"product": "mugs"}))
    body = encode_spans(spans).SerializeToString()
    assert post(sidecar, body)[0] == 200
    assert post(sidecar, body)[0] == 200  # a Collector retry
    assert wait_for(lambda: sidecar.pipeline.counters.get("threads_uploaded") == 1)
    time.sleep(0.5)
    (thread,) = read_threads(client)
    assert thread.metadata["total_tokens"] == "10"  # not doubled
    assert sidecar.pipeline.counters.get("duplicates") == len(spans)


def test_invalid_spans_make_a_partial_success(sidecar, capture, client):
    spans = capture(lambda: FakeListChatModel(responses=["ok"]).invoke("fine"))
    data = json.loads(otlp_json(spans))
    broken = dict(data["resourceSpans"][0]["scopeSpans"][0]["spans"][0], traceId="00" * 16)
    data["resourceSpans"][0]["scopeSpans"][0]["spans"].append(broken)
    status, _, body = post(sidecar, json.dumps(data).encode(), "application/json")
    assert status == 200
    answer = json.loads(body)["partialSuccess"]
    assert answer["rejectedSpans"] == "1" and "trace id" in answer["errorMessage"]
    assert wait_for(lambda: len(read_threads(client)) == 1)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"\x0a\xff\xff\xff\x0f", "application/x-protobuf", 400),  # truncated protobuf
        (b"\x12\x34garbage", "application/x-protobuf", 400),
        (b"{not json", "application/json", 400),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", 400),
        (b"hello", "text/plain", 415),
    ],
)
def test_malformed_bodies_get_a_clear_error(sidecar, body, content_type, status):
    answer, _, payload = post(sidecar, body, content_type)
    assert answer == status
    if content_type == "application/json":
        assert json.loads(payload)["message"]
    elif content_type == "application/x-protobuf":
        assert b"malformed" in payload


def test_bearer_token_is_required(sidecar):
    assert post(sidecar, b"", token=None)[0] == 401
    assert post(sidecar, b"", token="wrong")[0] == 401


@pytest.mark.parametrize("sidecar", [{"max_body_bytes": 10_000, "max_decompressed_bytes": 100_000}], indirect=True)
def test_oversized_body_and_gzip_bomb_get_413(sidecar):
    assert post(sidecar, b"\x00" * 20_000)[0] == 413
    bomb = gzip.compress(b"\x00" * 50_000_000)  # 50 MB of zeros in ~50 kB... too big already
    assert len(bomb) > 10_000
    small_bomb = gzip.compress(b"\x00" * 5_000_000)[:9_000]
    status, _, _ = post(sidecar, small_bomb, Content_Encoding="gzip")
    assert status == 413
    assert post(sidecar, b"x", Content_Encoding="br")[0] == 415


def test_health_and_stats(sidecar, capture):
    with urllib.request.urlopen(f"{sidecar.http_url}/healthz", timeout=5) as response:
        assert json.load(response)["status"] == "ok"
    request = urllib.request.Request(f"{sidecar.http_url}/stats", headers={"Authorization": f"Bearer {SERVE_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        stats = json.load(response)
    assert "threads_uploaded" in stats["counters"]
    assert stats["delivery"]["token"] == "set" and TOKEN not in json.dumps(stats)


@pytest.mark.parametrize("sidecar", [{"retry_after_s": 1}], indirect=True)
def test_full_queue_answers_503_with_retry_after(sidecar, local_api, capture):
    local_api.set_faults(latency_s=3)
    # A tiny queue (OTEL_EXPORTER_CONTEXT_QUEUE_SIZE) so that a slow API fills it at once.
    object.__setattr__(sidecar.pipeline.delivery.settings, "queue_size", 2)
    statuses = []
    for n in range(12):
        spans = capture(lambda n=n: FakeListChatModel(responses=["ok"]).invoke(f"q{n}"))
        status, headers, _ = post(sidecar, encode_spans(spans).SerializeToString())
        statuses.append(status)
        if status == 503:
            assert headers["Retry-After"] == "1"
    assert 503 in statuses
    assert sidecar.pipeline.counters.get("threads_dropped") == 0  # pushed back, not dropped
    local_api.clear_faults()


SERVE = [sys.executable, "-m", "otel_context.cli", "serve", "--port", "0", "--grpc-port", "-1", "--settle-ms", "100"]


def test_sigterm_with_work_queued_keeps_it_in_the_spool(local_api, client, capture, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(
        PYTHONPATH=str(REPO),
        OTEL_CONTEXT_SERVE_STATE_DIR=str(tmp_path / "state"),
        OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
        OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
        OTEL_EXPORTER_CONTEXT_SPOOL_DIR=str(tmp_path / "spool"),
        OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF="500",
    )
    local_api.set_faults(down_s=60)
    spans = capture(lambda: [company_chain(f"name {n}").invoke({"product": f"p{n}"}) for n in range(5)])
    server = subprocess.Popen(SERVE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = server.stdout.readline()
        url = line.split("OTLP/HTTP on ")[1].split("/v1/traces")[0]
        request = urllib.request.Request(
            f"{url}/v1/traces", data=encode_spans(spans).SerializeToString(), method="POST"
        )
        request.add_header("Content-Type", "application/x-protobuf")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        time.sleep(0.5)  # past the settle time: the threads are converted and spooled
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "5 thread(s) undelivered (kept in the spool)" in out
    local_api.clear_faults()
    restarted = subprocess.Popen(SERVE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert wait_for(lambda: len(read_threads(client)) == 5, timeout=30)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.communicate(timeout=60)
    assert sorted(texts(t)[-1][2] for t in read_threads(client)) == [f"name {n}" for n in range(5)]
