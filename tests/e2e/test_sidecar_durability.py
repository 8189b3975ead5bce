"""With a spool, `otel-context serve` acknowledges only what is durable: kill -9 loses nothing answered 200.

The sidecar runs as a real process and is killed with SIGKILL; a new process on the same spool and
state directories replays what the first one acknowledged. Every acknowledged LangChain trace must
reach the local Context API as exactly one thread.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.pipeline import Pipeline
from otel_context.receiver.durable import DurableIntake
from otel_context.receiver.wal import WriteAheadLog
from otel_context.spans.otlp import records_from_request

from ..support.threads import TOKEN
from ..support.waiting import wait_for
from ..support.wal import logged
from .test_sidecar_rotel import clean_env, free_port

PRODUCT = "colorful socks"
TRACES_PER_REQUEST = 10


def company_chain() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
    (prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()).invoke({"product": PRODUCT})


def one_trace(template: ExportTraceServiceRequest, number: int) -> ExportTraceServiceRequest:
    """The template's trace under a trace id and product of its own: a distinct thread per number."""
    trace = ExportTraceServiceRequest()
    trace.CopyFrom(template)
    trace_id = one_trace_id(number).to_bytes(16, "big")
    for resource in trace.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.trace_id = trace_id
                for attribute in span.attributes:
                    if PRODUCT in attribute.value.string_value:
                        attribute.value.string_value = attribute.value.string_value.replace(PRODUCT, product(number))
    return trace


def product(number: int) -> str:
    return f"socks no. {number}"


def make_requests(template: ExportTraceServiceRequest, count: int) -> list[tuple[bytes, list[int]]]:
    """`count` traces as OTLP/protobuf bodies of `TRACES_PER_REQUEST` traces each, with their numbers."""
    out = []
    for first in range(0, count, TRACES_PER_REQUEST):
        numbers = list(range(first, min(first + TRACES_PER_REQUEST, count)))
        request = ExportTraceServiceRequest()
        for number in numbers:
            request.resource_spans.extend(one_trace(template, number).resource_spans)
        out.append((request.SerializeToString(), numbers))
    return out


class Sidecar:
    """`otel-context serve` as a process with a spool; `kill()` is SIGKILL, `stop()` SIGTERM."""

    def __init__(self, tmp_path: Path, endpoint: str, *, settle_ms: int = 1000, **env_vars: str) -> None:
        command = [sys.executable, "-m", "otel_context.cli", "serve", "--port", "0", "--grpc-port", "-1"]
        command += ["--settle-ms", str(settle_ms), "--endpoint", endpoint]
        command += ["--spool-dir", str(tmp_path / "spool"), "--state-dir", str(tmp_path / "state")]
        env = clean_env(
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF="100",
            OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF="500",
            **env_vars,
        )
        self.log = tmp_path / "serve.log"
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once the replay is done and the listeners are open
        assert "OTLP/HTTP on " in line, line + self.log.read_text()
        self.url = line.split("OTLP/HTTP on ", 1)[1].split("/v1/traces", 1)[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def send(self, body: bytes) -> tuple[int, str | None]:
        """POST one OTLP body: the status and `Retry-After`, whatever the status."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("Retry-After")
        finally:
            connection.close()

    def post(self, body: bytes) -> int:
        request = urllib.request.Request(
            f"{self.url}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    def counters(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            return json.load(response)["counters"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out + self.log.read_text()


def stored(local_api) -> dict[int, list[dict]]:
    """The threads in the local API's store, by the number of the trace they came from."""
    threads, _ = local_api.store.list(per_page=100_000)
    out: dict[int, list[dict]] = {}
    for thread in threads:
        trace_id = int(thread["metadata"]["trace_id"], 16)
        out.setdefault(trace_id & ((1 << 96) - 1), []).append(thread)
    return out


def assert_exactly_once(local_api, client, numbers: set[int], restarted: Sidecar) -> dict[int, list[dict]]:
    """Each trace in `numbers` is one thread with its own question, and nothing arrives twice."""
    assert wait_for(lambda: numbers <= set(stored(local_api)), timeout=60), (
        f"missing {len(numbers - set(stored(local_api)))}"
    )
    assert wait_for(lambda: restarted.counters()["threads_queued"] == 0, timeout=60)
    restarted.stop()
    by_trace = stored(local_api)
    duplicated = {n: [t["id"] for t in threads] for n, threads in by_trace.items() if len(threads) > 1}
    assert not duplicated, f"traces stored as more than one thread: {duplicated}"
    for number in numbers:
        (thread,) = by_trace[number]
        assert [(m.get("role"), m.get("message")) for m in thread["messages"]] == [
            ("user", product(number)),
            ("assistant", "Rainbow Threads"),
        ]
    listing = client.conversations(start_time="2000-01-01T00:00:00Z", per_page=1, enforce_https=False)
    assert listing.pagination.total_records == len(by_trace)  # what the real client sees: one thread per trace
    return by_trace


def test_kill_9_right_after_the_last_200_with_the_api_down_loses_nothing(capture, local_api, client, tmp_path):
    template = encode_spans(capture(company_chain))
    requests = make_requests(template, 1000)
    down = Sidecar(tmp_path, f"http://127.0.0.1:{free_port()}")  # a closed port: nothing can be delivered
    for body, _ in requests:
        assert down.post(body) == 200
    down.kill()  # roots still settling, threads still queued: only the write-ahead log has them
    assert local_api.store.count() == 0

    restarted = Sidecar(tmp_path, local_api.url)
    by_trace = assert_exactly_once(local_api, client, set(range(1000)), restarted)
    assert len(by_trace) == 1000


def test_kill_9_under_load_loses_no_acknowledged_trace(capture, local_api, client, tmp_path):
    template = encode_spans(capture(company_chain))
    requests = make_requests(template, 6000)
    running = Sidecar(tmp_path, local_api.url)
    acknowledged: list[int] = []
    lock = threading.Lock()

    def client_connection(mine: list[tuple[bytes, list[int]]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        try:
            for body, numbers in mine:
                connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    with lock:
                        acknowledged.extend(numbers)
        except (OSError, http.client.HTTPException):
            return  # the sidecar was killed
        finally:
            connection.close()

    clients = [threading.Thread(target=client_connection, args=(requests[i::4],)) for i in range(4)]
    for worker in clients:
        worker.start()
    assert wait_for(lambda: len(acknowledged) >= 1500, timeout=60, interval=0.01)
    running.kill()
    for worker in clients:
        worker.join(30)
    acked = set(acknowledged)
    sent_all = len(acked) == 6000
    assert not sent_all, "the load ended before the kill: the test proved nothing"
    assert len(stored(local_api)) < len(acked), "everything was delivered before the kill: nothing was at risk"

    restarted = Sidecar(tmp_path, local_api.url)
    by_trace = assert_exactly_once(local_api, client, acked, restarted)
    assert set(by_trace) <= set(range(6000))


def split(trace: ExportTraceServiceRequest) -> tuple[ExportTraceServiceRequest, ExportTraceServiceRequest]:
    """A trace's root span alone, and its other spans."""
    root, children = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    root.CopyFrom(trace)
    children.CopyFrom(trace)
    for request, keep_root in ((root, True), (children, False)):
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                kept = [span for span in scope.spans if (not span.parent_span_id) == keep_root]
                del scope.spans[:]
                scope.spans.extend(kept)
    return root, children


def merged(*requests: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    out = ExportTraceServiceRequest()
    for request in requests:
        out.resource_spans.extend(request.resource_spans)
    return out


def intake(tmp_path: Path, local_api, **settings: object) -> DurableIntake:
    """A pipeline with a spool behind the write-ahead log in `tmp_path / "wal"`, as `otel-context serve` has."""
    delivery = resolve_settings(
        endpoint=local_api.url, token=TOKEN, spool_dir=str(tmp_path / f"spool-{time.monotonic_ns()}"), **settings
    )
    return DurableIntake(Pipeline(delivery, push_back=True, session_db=":memory:"), WriteAheadLog(tmp_path / "wal"))


def ingest(durable: DurableIntake, request: ExportTraceServiceRequest) -> None:
    records, problems = records_from_request(request)
    assert not problems
    asyncio.run(durable.accept(request, records))


def test_a_record_stays_until_its_traces_are_finished_and_replays_only_those(capture, local_api, tmp_path):
    template = encode_spans(capture(company_chain))
    t_root, t_children = split(one_trace(template, 1))
    _, u_children = split(one_trace(template, 2))  # U's root never comes: U is an orphan
    first = intake(tmp_path, local_api)
    ingest(first, t_children)
    ingest(first, merged(t_root, u_children))  # T's root: T's thread is spooled, T is finished
    first.tick()
    first.wal.close()  # then a crash: the pipeline is never shut down
    assert logged(tmp_path / "wal") == [{one_trace_id(2)}]  # T's children are gone; the other request stays for U

    second = intake(tmp_path, local_api, pending_ttl_s=1.0)
    assert second.replay() == 1
    second.tick()
    counters = second.pipeline.counters.snapshot()
    assert counters["spans_received"] == len(records_from_request(u_children)[0])  # T is not sent again
    assert counters["threads_converted"] == 0 and counters["requests_logged"] == 1
    time.sleep(1.1)
    second.tick()  # U is evicted (counted), which finishes it: its record goes
    assert second.pipeline.counters.get("traces_evicted") == 1
    second.shutdown(5)
    assert logged(tmp_path / "wal") == []


def one_trace_id(number: int) -> int:
    return 0xD0AB1E << 96 | number


def test_grpc_and_json_requests_are_logged_then_released(capture, local_api, client, tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_context.receiver.service import SidecarThread

    from .test_receiver import otlp_json

    receiver = resolve_receiver_settings(port=0, grpc_port=0, settle_s=0.2, state_dir=str(tmp_path))
    delivery = resolve_settings(endpoint=local_api.url, token=TOKEN, spool_dir=str(tmp_path / "spool"))
    with SidecarThread(receiver, delivery) as sidecar:
        grpc_spans = capture(company_chain)
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{sidecar.grpc_port}", insecure=True)
        assert exporter.export(grpc_spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        request = urllib.request.Request(
            f"{sidecar.http_url}/v1/traces", data=otlp_json(capture(company_chain)), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert sidecar.durable is not None
        assert sidecar.durable.wal.count() >= 1  # acknowledged, roots still settling: only the log has them
        assert wait_for(lambda: local_api.store.count() == 2)
        assert wait_for(lambda: sidecar.durable.wal.count() == 0)
