"""`otel-context serve` under abuse (issue 11): each case an attacker tried, over real sockets.

Resource cases run the sidecar as its own process, so its peak memory (`VmHWM`) and its log are its
own; the others use the in-process sidecar of tests/e2e/test_receiver.py and read threads back from the
local Context API.
"""

from __future__ import annotations

import gzip
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..support.paths import REPO
from ..support.threads import read_threads, texts
from ..support.waiting import wait_for
from .test_receiver import SERVE_TOKEN, otlp_json, post, sidecar  # noqa: F401  (the fixture)

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
EMPTY_RESOURCE_SPANS = b"\x0a\x00"


class ServeProcess:
    """`otel-context serve` in a child process, its stderr in a file."""

    def __init__(self, tmp: Path, *args: str, nofile: int | None = None, **env: str) -> None:
        self.log_path = tmp / "serve.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
        environment.update(
            PYTHONPATH=str(REPO),
            OTEL_CONTEXT_SERVE_STATE_DIR=str(tmp / "state"),
            OTEL_EXPORTER_CONTEXT_ENDPOINT="http://127.0.0.1:9",  # nothing is delivered in these tests
            OTEL_EXPORTER_CONTEXT_TOKEN="unused",
            **env,
        )
        command = [sys.executable, "-m", "otel_context.cli", "serve", "--port", "0", "--grpc-port", "0", *args]

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=REPO,
            preexec_fn=limit_files,
        )
        line = self.process.stdout.readline()
        assert "OTLP/HTTP on " in line, self.log_path.read_text()
        self.url = line.split("OTLP/HTTP on ")[1].split("/v1/traces")[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.grpc_target = "127.0.0.1:" + line.split("OTLP/gRPC on 127.0.0.1:")[1].split(",")[0]

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def log_lines(self) -> list[str]:
        self.log.flush()
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def serve(tmp_path) -> Iterator[ServeProcess]:
    process = ServeProcess(tmp_path, OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN)
    yield process
    process.stop()


def http(url: str, body: bytes | None = None, timeout: float = 10, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def healthz_latency(url: str) -> float:
    started = time.monotonic()
    assert http(f"{url}/healthz", timeout=5)[0] == 200
    return time.monotonic() - started


def raw_export(channel: grpc.Channel):
    """The Export method taking and returning bytes, so a test can send anything."""
    return channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)


AUTH = (("authorization", f"Bearer {SERVE_TOKEN}"),)


# --- 1. decompression amplification -------------------------------------------------------------------------


def test_gzip_amplification_is_refused_quickly_and_cheaply_while_health_answers(serve):
    bomb = gzip.compress(EMPTY_RESOURCE_SPANS * (32 * 1024 * 1024), 9)  # 64 MiB of empty ResourceSpans
    assert len(bomb) < 100 * 1024
    baseline = serve.peak_rss_mb()
    slowest_health: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            slowest_health.append(healthz_latency(serve.url))
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        started = time.monotonic()
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        status, body = http(f"{serve.url}/v1/traces", bomb, Authorization=f"Bearer {SERVE_TOKEN}", **headers)
        elapsed = time.monotonic() - started
    finally:
        done.set()
        prober.join()
    assert status == 413 and b"max_spans" in body
    assert elapsed < 2.0, elapsed  # was 36.6 s
    assert serve.peak_rss_mb() - baseline < 300  # was 2.2 GB
    assert max(slowest_health) < 1.0


def test_grpc_amplification_is_resource_exhausted(serve):
    message = EMPTY_RESOURCE_SPANS * (30 * 1024 * 1024)  # 60 MiB, under gRPC's message limit
    baseline = serve.peak_rss_mb()
    with grpc.insecure_channel(serve.grpc_target, compression=grpc.Compression.Gzip) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            raw_export(channel)(message, metadata=AUTH, timeout=30)
        elapsed = time.monotonic() - started
    assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert elapsed < 3.0, elapsed  # was 9.5 s (gRPC's own inflating included)
    assert serve.peak_rss_mb() - baseline < 400  # gRPC holds the 60 MiB message itself; was 1.1 GB


# --- 2. gRPC status codes, and quiet logs -------------------------------------------------------------------


def test_grpc_garbage_is_invalid_argument_and_logged_once_without_traceback(serve):
    valid_prefix = b"\x0a\xff\xff\xff\x0f"  # a ResourceSpans whose length runs past the end
    with grpc.insecure_channel(serve.grpc_target) as channel:
        export = raw_export(channel)
        for message in (b"\x12\x34garbage", valid_prefix):
            with pytest.raises(grpc.RpcError) as error:
                export(message, metadata=AUTH, timeout=10)
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(300):  # unauthenticated garbage: refused before decoding
            with pytest.raises(grpc.RpcError) as error:
                export(b"\xff\xff\xff", timeout=10)
            assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
    lines = serve.log_lines()
    assert len(lines) <= 4, lines  # was 7,001 lines for 1,000 messages
    assert not any("Traceback" in line or "ERROR" in line for line in lines)


def test_malformed_http_is_answered_400_and_logged_once_without_traceback(serve):
    malformed = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    ]
    for payload in malformed * 25:
        with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as conn:
            conn.sendall(payload)
            assert conn.recv(64).split(b" ")[1] == b"400"
    lines = serve.log_lines()
    assert len(lines) <= 2 and not any("Traceback" in line or "ERROR" in line for line in lines), lines


# --- 3. invalid UTF-8 over gRPC, lone surrogates in JSON ---------------------------------------------------


def chat_spans(capture, question: str):
    return capture(lambda: FakeListChatModel(responses=["ok"]).invoke(question))


def test_grpc_repairs_invalid_utf8_and_keeps_the_spans(sidecar, capture, client):  # noqa: F811
    body = encode_spans(chat_spans(capture, "MARK au lait")).SerializeToString()
    broken = body.replace(b"MARK", b"caf\xe9")  # same length, no longer UTF-8
    assert broken.count(b"caf\xe9") >= 1
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        answer = ExportTraceServiceResponse.FromString(raw_export(channel)(broken, metadata=AUTH, timeout=10))
    assert answer.partial_success.rejected_spans == 0
    assert wait_for(lambda: len(read_threads(client)) == 1)
    assert texts(read_threads(client)[0])[0] == ("message", "user", "caf\ufffd au lait")


def test_json_lone_surrogate_keeps_the_batch(sidecar, capture, client):  # noqa: F811
    body = otlp_json(chat_spans(capture, "MARK then")).replace(b"MARK", b"\\udc00")
    status, _, _ = post(sidecar, body, "application/json")
    assert status == 200
    assert wait_for(lambda: len(read_threads(client)) == 1)
    assert texts(read_threads(client)[0])[0] == ("message", "user", "\ufffd then")


# --- 4. multi-member gzip -----------------------------------------------------------------------------------


def test_multi_member_gzip_is_read_to_the_end(sidecar, capture, client):  # noqa: F811
    first = encode_spans(chat_spans(capture, "first")).SerializeToString()
    second = encode_spans(chat_spans(capture, "second")).SerializeToString()
    body = gzip.compress(first) + gzip.compress(second)  # protobuf concatenation merges the requests
    assert post(sidecar, body, Content_Encoding="gzip")[0] == 200
    assert wait_for(lambda: len(read_threads(client)) == 2)
    assert sorted(texts(t)[0][2] for t in read_threads(client)) == ["first", "second"]
    assert post(sidecar, gzip.compress(first) + b"not gzip", Content_Encoding="gzip")[0] == 400


# --- 5. unfinished headers, a connection flood, file descriptors running out ---------------------------------


def test_half_sent_headers_time_out_and_a_flood_stays_quiet(tmp_path):
    serve = ServeProcess(tmp_path, nofile=256, OTEL_CONTEXT_SERVE_HEADER_TIMEOUT="1000")
    sockets: list[socket.socket] = []
    try:
        for _ in range(400):  # more than the process may open: the cap refuses the rest, quietly
            conn = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
            conn.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            sockets.append(conn)
        deadline = time.monotonic() + 5
        open_ones = list(sockets)
        while open_ones and time.monotonic() < deadline:  # the server closes them after the header timeout
            still = []
            for conn in open_ones:
                conn.settimeout(0.05)
                try:
                    if conn.recv(1024) == b"":
                        continue
                except TimeoutError:
                    still.append(conn)
                except OSError:
                    continue
            open_ones = still
        assert not open_ones, f"{len(open_ones)} half-open connections still open"
        assert http(f"{serve.url}/healthz", timeout=5)[0] == 200
        lines = serve.log_lines()
        assert len(lines) <= 3 and not any("Traceback" in line for line in lines), lines
    finally:
        for conn in sockets:
            conn.close()
        serve.stop()


def test_a_body_that_never_arrives_times_out(tmp_path):
    serve = ServeProcess(tmp_path, OTEL_CONTEXT_SERVE_BODY_TIMEOUT="500")
    try:
        with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as conn:
            conn.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 1000\r\n\r\n\x0a"
            )
            conn.settimeout(5)
            assert conn.recv(1024).startswith(b"HTTP/1.1 408")
    finally:
        serve.stop()


# --- 6. the bearer scheme in any case; tokens kept out of argv and logs --------------------------------------


def test_bearer_scheme_is_case_insensitive_over_http_and_grpc(sidecar, capture):  # noqa: F811
    body = encode_spans(chat_spans(capture, "q")).SerializeToString()
    for scheme in ("bearer", "BEARER", "Bearer"):
        assert post(sidecar, body, token=None, Authorization=f"{scheme} {SERVE_TOKEN}")[0] == 200
    assert post(sidecar, body, token=None, Authorization=f"Basic {SERVE_TOKEN}")[0] == 401
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        raw_export(channel)(body, metadata=(("authorization", f"bearer {SERVE_TOKEN}"),), timeout=10)


def test_token_from_a_file_never_in_argv_nor_log(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-secret-42\n")
    serve = ServeProcess(tmp_path, "--token-file", str(token_file))
    try:
        assert b"file-secret-42" not in Path(f"/proc/{serve.process.pid}/cmdline").read_bytes()
        headers = {"Content-Type": "application/x-protobuf"}
        assert http(f"{serve.url}/v1/traces", b"", Authorization="Bearer wrong", **headers)[0] == 401
        assert http(f"{serve.url}/v1/traces", b"", Authorization="bearer file-secret-42", **headers)[0] == 200
    finally:
        serve.stop()
    assert "file-secret-42" not in serve.log_path.read_text()


# --- the in-progress cap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sidecar", [{"max_in_progress": 1, "retry_after_s": 1}], indirect=True)
def test_requests_beyond_the_in_progress_cap_get_503_with_retry_after(sidecar, capture):  # noqa: F811
    # A request that stays in decoding a while: ~60,000 spans' worth of attributes, just under the limits.
    body = gzip.compress(encode_spans(chat_spans(capture, "x" * 100)).SerializeToString() * 2000)
    results: list[tuple[int, object]] = []

    def send() -> None:
        status, headers, _ = post(sidecar, body, Content_Encoding="gzip")
        results.append((status, headers.get("Retry-After")))

    for _ in range(5):  # concurrent requests: one decodes, the others are pushed back
        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if (503, "1") in results:
            break
    assert (503, "1") in results and any(status == 200 for status, _ in results), results


@pytest.mark.parametrize("sidecar", [{"max_in_progress": 1, "retry_after_s": 3}], indirect=True)
def test_grpc_beyond_the_in_progress_cap_is_unavailable_with_retry_info(sidecar, capture):  # noqa: F811
    from google.rpc import error_details_pb2, status_pb2

    body = encode_spans(chat_spans(capture, "x" * 100)).SerializeToString() * 2000
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        export = raw_export(channel)
        for _ in range(5):
            calls = [export.future(body, metadata=AUTH, timeout=30) for _ in range(6)]
            refused = [call for call in calls if call.exception() is not None]
            if refused:
                break
    assert refused and len(refused) < len(calls)
    error = refused[0].exception()
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    info = error_details_pb2.RetryInfo()
    assert status_pb2.Status.FromString(details).details[0].Unpack(info)
    assert info.retry_delay.seconds == 3
