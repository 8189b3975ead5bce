"""The sidecar through a real OpenTelemetry Collector: app -> Collector -> otel-context serve -> Context.

The Collector is otelcol-context, built here from collector-config/builder-config.yaml (see
tests/support/otelcol.py), and it runs the shipped collector-config/otelcol.yaml itself: a small
overlay file only moves its ports to free ones (and turns off the Collector's own metrics endpoint).
So the app's OTLP goes over gRPC or HTTP through `memory_limiter`, the `filter/genai` processor that
keeps only GenAI/LangChain spans, `batch`, and the `otlp_http` exporter with `retry_on_failure` and
`sending_queue`, to `otel-context serve` and on to the local Context API. The threads read back
with the real client must equal what the in-process exporter makes of the same app.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
import yaml
from opentelemetry import trace

from otel_context.local_api import LocalContextAPI

from ..support.otelcol import BUILD_TIMEOUT_S, CONFIG_DIR, otelcol_binary
from ..support.sidecar import (
    SERVE_TOKEN,
    Process,
    assert_pushed_back_and_nothing_lost,
    assert_sent_equals_in_process,
    clean_env,
    exporter_for,
    free_port,
    serve,
    serve_counters,
    the_app,
)
from ..support.threads import read_threads
from ..support.waiting import wait_for

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S)  # the first use may build the Collector
EXPORTER = "otlp_http/otel_context"  # the shipped config's exporter to the sidecar


def overlay(grpc_port: int, http_port: int, health_port: int, serve_port: int) -> dict:
    """Merged over otelcol.yaml by the Collector (`--config` twice): only addresses change."""
    return {
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                    "http": {"endpoint": f"127.0.0.1:{http_port}"},
                }
            }
        },
        "exporters": {
            EXPORTER: {
                "traces_endpoint": f"http://127.0.0.1:{serve_port}/v1/traces",
                "logs_endpoint": f"http://127.0.0.1:{serve_port}/v1/logs",
            }
        },
        # the Collector's own metrics would listen on :8888, which parallel runs share
        "service": {"telemetry": {"metrics": {"level": "none"}}},
    }


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture
def pipeline(local_api: LocalContextAPI, request, tmp_path):
    """otel-context serve (a process) behind the Collector (a process); yields their ports and logs."""
    binary = otelcol_binary()
    delivery = getattr(request, "param", {})
    sidecar, serve_port = serve(local_api, tmp_path / "state", **delivery)
    grpc_port, http_port, health_port = free_port(), free_port(), free_port()
    overlay_file = tmp_path / "overlay.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay(grpc_port, http_port, health_port, serve_port)))
    collector = Process(
        [str(binary), "--config", str(CONFIG_DIR / "otelcol.yaml"), "--config", str(overlay_file)],
        clean_env(OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN),
    )
    info = {"grpc": grpc_port, "http": http_port, "serve": serve_port, "collector": collector}
    if not wait_for(lambda: healthy(health_port) or collector.proc.poll() is not None, timeout=30) or (
        collector.proc.poll() is not None
    ):
        sidecar.stop()
        pytest.fail("the Collector did not start:\n" + collector.stop()[-4000:])
    yield info
    info["collector_log"] = collector.stop()
    info["serve_log"] = sidecar.stop()


def the_app_behind_a_web_server() -> None:
    """the_app inside an HTTP server span, next to a database span: what a real service sends."""
    tracer = trace.get_tracer("web-app")
    with tracer.start_as_current_span(
        "POST /chat", kind=trace.SpanKind.SERVER, attributes={"http.request.method": "POST", "url.path": "/chat"}
    ):
        with tracer.start_as_current_span("SELECT users", attributes={"db.system.name": "postgresql"}):
            pass
        the_app()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_threads_through_the_collector_equal_the_in_process_exporter(pipeline, capture, client, protocol):
    spans = capture(the_app_behind_a_web_server)
    plain = [s for s in spans if s.name in ("POST /chat", "SELECT users")]
    assert len(plain) == 2
    assert_sent_equals_in_process(exporter_for(protocol, pipeline), spans, client)
    # filter/genai dropped the web and database spans in the Collector: none reached the sidecar
    counters = serve_counters(pipeline["serve"])
    assert counters["spans_ignored"] == 0, counters
    assert counters["spans_received"] == len(spans) - len(plain), counters


@pytest.mark.parametrize(
    "pipeline",
    [{"OTEL_EXPORTER_CONTEXT_QUEUE_SIZE": "2", "OTEL_EXPORTER_CONTEXT_CONCURRENCY": "1"}],
    indirect=True,
)
def test_backpressure_the_collector_waits_retry_after_and_nothing_is_lost(pipeline, local_api, capture, client):
    # http, grpc, http, ...; longer apart than the batch processor's 200 ms
    assert_pushed_back_and_nothing_lost(pipeline, local_api, capture, client, ("http", "grpc"), pause_s=0.25)

    log = pipeline["collector"].stop()
    # The exporterhelper logs each retry: "Throttle (<Retry-After>)" and the "interval" it waited.
    retries = [line for line in log.splitlines() if "Will retry the request after interval" in line]
    assert retries, log[-4000:]
    for line in retries:
        throttle, interval = THROTTLE.search(line), INTERVAL.search(line)
        assert throttle and interval, line
        assert seconds(interval.group(1)) >= seconds(throttle.group(1)) > 0, f"Retry-After not honoured: {line}"
    assert "Dropping data" not in log and "rejected_items" not in log, log[-4000:]


THROTTLE = re.compile(r"Throttle \(([0-9.]+m?s)\)")
INTERVAL = re.compile(r'"interval": "([0-9.]+m?s)"')


def seconds(duration: str) -> float:
    """A Go duration as the Collector logs these ones ("2s", "1.5s", "500ms") in seconds."""
    return float(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration[:-1])


@pytest.mark.parametrize("pipeline", [{"OTEL_EXPORTER_CONTEXT_EVAL_RATINGS": "relevance>=0.7"}], indirect=True)
def test_an_evaluation_log_record_through_the_collector_rates_its_run(pipeline, capture, client):
    """The app's logs go to the Collector too: its logs pipeline keeps the `gen_ai.evaluation.result` record
    (dropping the app's plain log line) and forwards it to `/v1/logs`, where it rates the run's answer."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.trace import NonRecordingSpan

    chain = ChatPromptTemplate.from_template("{question}") | FakeListChatModel(responses=["Paris"]) | StrOutputParser()
    spans = capture(lambda: chain.invoke({"question": "Capital of France?"}))
    exporter = exporter_for("http", pipeline)
    exporter.export(spans)
    exporter.shutdown()
    assert wait_for(lambda: len(read_threads(client)) == 1, timeout=30)

    logs = LoggerProvider()
    logs.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://127.0.0.1:{pipeline['http']}/v1/logs"))
    )
    judged = next(s for s in spans if "chat" in s.name.lower())
    logger = logs.get_logger("evaluator")
    logger.emit(body="an app log line: never leaves the Pod")
    logger.emit(
        event_name="gen_ai.evaluation.result",
        context=trace.set_span_in_context(NonRecordingSpan(judged.context)),
        attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.9},
    )
    logs.shutdown()
    assert wait_for(lambda: [m.rating for m in read_threads(client)[0].messages] == [None, 1], timeout=30)
    assert serve_counters(pipeline["serve"])["evaluations_received"] == 1
