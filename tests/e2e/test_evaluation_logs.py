"""Evaluation results recorded as log records (`gen_ai.evaluation.result` through the Logs API) reach the
sidecar over OTLP logs (`POST /v1/logs` protobuf and JSON, gRPC `LogsService/Export`) and join their run's
thread: its metadata and rating while the run is not built yet, a rating PATCH of its answer afterwards. The
spans are a real LangChain run's; the log records come from the SDK's own OTLP log exporters."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.trace import NonRecordingSpan

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from ..support.threads import TOKEN, read_threads
from ..support.waiting import wait_for
from .test_conversations import chain

SERVE_TOKEN = "logs-secret"
RELEVANCE = "gen_ai.evaluation.result"


def run_chain(capture) -> list:
    """A real LangChain run (OpenLLMetry): question, a fake model's answer."""
    return capture(lambda: chain("Paris").invoke({"question": "Capital of France?"}))


def sidecar(local_api, tmp_path, *, settle_s: float, grpc: bool = False, **receiver) -> SidecarThread:
    settings = resolve_receiver_settings(
        port=0, grpc_port=0 if grpc else -1, settle_s=settle_s, state_dir=str(tmp_path), token=SERVE_TOKEN, **receiver
    )
    return SidecarThread(settings, resolve_settings(endpoint=local_api.url, token=TOKEN, eval_ratings="relevance>=0.7"))


def post(url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str):
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("Authorization", f"Bearer {SERVE_TOKEN}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def send_spans(running, spans) -> None:
    status, _ = post(f"{running.http_url}/v1/traces", encode_spans(spans).SerializeToString())
    assert status == 200


def emit(exporter, span, score: float) -> None:
    """An evaluator's result, emitted through the Logs API in the context of the span it judged."""
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    context = trace.set_span_in_context(NonRecordingSpan(span.context))
    provider.get_logger("evaluator").emit(
        event_name=RELEVANCE,
        context=context,
        attributes={
            "gen_ai.evaluation.name": "relevance",
            "gen_ai.evaluation.score.value": score,
            "gen_ai.evaluation.score.label": "relevant" if score >= 0.7 else "off-topic",
        },
    )
    provider.shutdown()


def http_log_exporter(running):
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=f"{running.http_url}/v1/logs", headers={"Authorization": f"Bearer {SERVE_TOKEN}"})


def chat_span(spans):
    return next(s for s in spans if "chat" in s.name.lower() or s.attributes.get("llm.request.type") == "chat")


def test_an_evaluation_before_the_thread_is_built_joins_its_metadata_and_rating(local_api, client, capture, tmp_path):
    spans = run_chain(capture)
    with sidecar(local_api, tmp_path, settle_s=1.5) as running:
        send_spans(running, spans)
        emit(http_log_exporter(running), chat_span(spans), 0.9)  # protobuf, through the SDK's OTLP/HTTP exporter
        assert wait_for(lambda: running.pipeline.counters.get("threads_uploaded") == 1, timeout=20)
        assert running.pipeline.counters.get("evaluations_received") == 1
    (thread,) = read_threads(client)
    assert (thread.metadata["eval.relevance"], thread.metadata["eval.relevance.label"]) == ("0.9", "relevant")
    assert thread.metadata["eval_rating"] == "1"
    assert [m.rating for m in thread.messages] == [None, 1]


def test_an_evaluation_after_the_thread_was_sent_rates_its_answer(local_api, client, capture, tmp_path):
    spans = run_chain(capture)
    with sidecar(local_api, tmp_path, settle_s=0.1) as running:
        send_spans(running, spans)
        assert wait_for(lambda: running.pipeline.counters.get("threads_uploaded") == 1, timeout=20)
        request = _request(chat_span(spans), 0.2)  # OTLP/JSON, gzipped, hex ids
        payload = json.loads(_as_json(request))
        status, body = post(
            f"{running.http_url}/v1/logs",
            gzip.compress(json.dumps(payload).encode()),
            "application/json",
            Content_Encoding="gzip",
        )
        assert status == 200 and json.loads(body) == {}
        assert wait_for(lambda: running.pipeline.counters.get("ratings_sent") == 1, timeout=20)
        assert running.pipeline.counters.get("evaluations_late") == 1
        assert wait_for(lambda: [m.rating for m in read_threads(client)[0].messages] == [None, -1], timeout=20)
    (thread,) = read_threads(client)
    assert "eval.relevance" not in thread.metadata  # a sent thread's metadata is fixed


def test_over_grpc_with_the_sdk_exporter(local_api, client, capture, tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    spans = run_chain(capture)
    with sidecar(local_api, tmp_path, settle_s=1.5, grpc=True) as running:
        send_spans(running, spans)
        endpoint = f"127.0.0.1:{running.grpc_port}"
        refused = OTLPLogExporter(endpoint=endpoint, insecure=True, headers=(("authorization", "Bearer wrong"),))
        emit(refused, chat_span(spans), 0.1)  # UNAUTHENTICATED: nothing taken
        exporter = OTLPLogExporter(
            endpoint=endpoint, insecure=True, headers=(("authorization", f"Bearer {SERVE_TOKEN}"),)
        )
        emit(exporter, chat_span(spans), 0.75)
        assert wait_for(lambda: running.pipeline.counters.get("threads_uploaded") == 1, timeout=20)
        assert running.pipeline.counters.get("evaluations_received") == 1
    (thread,) = read_threads(client)
    assert thread.metadata["eval.relevance"] == "0.75" and thread.metadata["eval_rating"] == "1"


def test_logs_get_the_bounds_auth_and_errors_of_traces(local_api, tmp_path):
    with sidecar(local_api, tmp_path, settle_s=0.1, max_spans=8) as running:
        url = f"{running.http_url}/v1/logs"
        good = _request(None, 0.5).SerializeToString()
        unauthorized = urllib.request.Request(url, data=good, method="POST")
        unauthorized.add_header("Content-Type", "application/x-protobuf")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unauthorized, timeout=10)
        assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
        assert post(url, good, "text/plain")[0] == 415
        assert post(url, good, Content_Encoding="br")[0] == 415
        assert post(url, b"\x0a\x05\x0a\x03", "application/x-protobuf")[0] == 400  # a length past the end
        assert post(url, b"{", "application/json")[0] == 400
        many = ExportLogsServiceRequest()
        scope = many.resource_logs.add().scope_logs.add()
        for _ in range(20):
            scope.log_records.add(event_name=RELEVANCE)
        assert post(url, many.SerializeToString())[0] == 413  # past max_spans: log records count as spans
        bomb = gzip.compress(b"\x00" * (running.receiver.max_decompressed_bytes + 1))
        assert post(url, bomb, Content_Encoding="gzip")[0] == 413
        mixed = _request(None, 0.5)
        bad = mixed.resource_logs[0].scope_logs[0].log_records.add(event_name=RELEVANCE)
        bad.trace_id = b"\x01" * 5
        status, body = post(url, mixed.SerializeToString())
        answer = ExportLogsServiceResponse.FromString(body)
        assert status == 200 and answer.partial_success.rejected_log_records == 1
        assert "trace id is 5 bytes" in answer.partial_success.error_message


def _request(span, score: float) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(event_name=RELEVANCE)
    if span is not None:
        record.trace_id = span.context.trace_id.to_bytes(16, "big")
        record.span_id = span.context.span_id.to_bytes(8, "big")
    for key, value in (("gen_ai.evaluation.name", "relevance"), ("gen_ai.evaluation.score.value", score)):
        attribute = record.attributes.add(key=key)
        if isinstance(value, str):
            attribute.value.string_value = value
        else:
            attribute.value.double_value = value
    return request


def _as_json(request: ExportLogsServiceRequest) -> str:
    """OTLP/JSON as a sender writes it: hex ids, not protobuf's base64."""
    from google.protobuf import json_format

    data = json_format.MessageToDict(request)
    for resource in data.get("resourceLogs", []):
        for scope in resource.get("scopeLogs", []):
            for record in scope.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in record:
                        import base64

                        record[key] = base64.b64decode(record[key]).hex()
    return json.dumps(data)


def test_in_process_the_log_exporter_joins_the_thread_or_rates_it_later(local_api, client, tracing):
    """`ContextLogExporter(span_exporter)` on the app's LoggerProvider: an evaluation emitted during the run
    joins its thread; one emitted after the thread was sent rates its answer (a PATCH)."""
    from langchain_core.runnables import RunnableLambda

    from otel_context import ContextLogExporter, ContextSpanExporter

    from ..support.tracing import App

    spans = ContextSpanExporter(
        endpoint=local_api.url, token=TOKEN, register_metrics=False, eval_ratings="relevance>=0.7"
    )
    app = App(spans, tracing)
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(ContextLogExporter(spans)))
    logger = logs.get_logger("evaluator")

    def judged(answer: str) -> str:  # an evaluator step inside the run, in its span's context
        logger.emit(
            event_name=RELEVANCE,
            attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.9},
        )
        return answer

    try:
        (chain("Paris") | RunnableLambda(judged)).invoke({"question": "Capital of France?"})
        with capture_root(tracing) as roots:
            chain("Rome").invoke({"question": "Capital of Italy?"})
        app.processor.force_flush()
        assert spans.pipeline.flush(10)
        root = roots[0]
        logger.emit(  # after the second run's thread was sent
            event_name=RELEVANCE,
            context=trace.set_span_in_context(NonRecordingSpan(root.context)),
            attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.1},
        )
        assert wait_for(lambda: spans.counters.get("ratings_sent") == 1, timeout=10)
        assert spans.pipeline.flush(10)
    finally:
        app.close()
        logs.shutdown()
    first, second = read_threads(client)
    assert first.metadata["eval.relevance"] == "0.9" and [m.rating for m in first.messages] == [None, 1]
    assert "eval.relevance" not in second.metadata and [m.rating for m in second.messages] == [None, -1]


class capture_root:
    """The root span of the runs made inside the block, seen as they end (beside the test's own exporter)."""

    def __init__(self, tracing) -> None:
        self.tracing = tracing
        self.roots: list = []

    def __enter__(self) -> list:
        from opentelemetry.sdk.trace import SpanProcessor

        roots = self.roots
        target = self.tracing.router.target

        class Tee(SpanProcessor):
            def on_start(self, span, parent_context=None) -> None:
                target.on_start(span, parent_context)

            def on_end(self, span) -> None:
                if span.parent is None:
                    roots.append(span)
                target.on_end(span)

        self.tracing.router.target = Tee()
        self._target = target
        return roots

    def __exit__(self, *exc) -> None:
        self.tracing.router.target = self._target


OFFICIAL_APP = """
import sys
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan

from tests.apps.official_apps import _chain
from tests.support.openai_stub import OpenAIStub

url, token = sys.argv[1], sys.argv[2]
headers = {"Authorization": f"Bearer {token}"}
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers)))
ended = InMemorySpanExporter()  # the evaluator finds the run it judges
provider.add_span_processor(SimpleSpanProcessor(ended))
LangChainInstrumentor().instrument(tracer_provider=provider)
logs = LoggerProvider()
logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs", headers=headers)))

with OpenAIStub(["Rainbow Threads"]) as stub:
    _chain(stub, "What is a good name for a company that makes {product}?").invoke({"product": "socks"})
(run,) = [s for s in ended.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == "invoke_workflow"]
logs.get_logger("evaluator").emit(
    event_name="gen_ai.evaluation.result",
    context=trace.set_span_in_context(NonRecordingSpan(run.context)),
    attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.95},
)
logs.shutdown()  # the evaluation first: the sidecar waits for the run's settle time anyway
provider.shutdown()
"""


def test_under_the_official_instrumentation_an_app_process_through_the_sidecar(local_api, client, tmp_path):
    """A real app process: OpenTelemetry's LangChain instrumentation (ChatOpenAI against a local stub), its spans
    and an evaluator's log record exported with the SDK's OTLP/HTTP exporters to `otel-context serve`."""
    import os
    import subprocess
    import sys

    from ..support.paths import REPO

    app = tmp_path / "official_evaluated.py"
    app.write_text(OFFICIAL_APP)
    with sidecar(local_api, tmp_path, settle_s=1.0) as running:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "TRACELOOP_"))}
        env.update(PYTHONPATH=str(REPO), OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY")
        done = subprocess.run(
            [sys.executable, str(app), running.http_url, SERVE_TOKEN],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert wait_for(lambda: running.pipeline.counters.get("threads_uploaded") == 1, timeout=20)
    (thread,) = read_threads(client)
    assert [(m.role, m.message) for m in thread.messages] == [("user", "socks"), ("assistant", "Rainbow Threads")]
    assert thread.metadata["eval.relevance"] == "0.95" and thread.messages[-1].rating == 1
