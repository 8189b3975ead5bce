"""`otel-context serve` requires its token however it is given, with one worker or two (issue 21: with
`--workers 2 --token-file`, the workers answered OTLP and `/stats` without one), over HTTP and gRPC,
and no worker's command line shows the token.

The eight sidecars start together (a module fixture), so the matrix costs about one start.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from ..support.sidecar import Process, clean_env, free_port

SECRET = "s3cret-for-the-workers"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ATTEMPTS = 12  # requests each on a connection of its own: with two workers, the kernel spreads them over both
WAYS = ("--token", "--token-file", "OTEL_CONTEXT_SERVE_TOKEN_FILE", "OTEL_CONTEXT_SERVE_TOKEN")
CASES = [(way, workers) for way in WAYS for workers in (1, 2)]


class Sidecar:
    def __init__(self, way: str, workers: int, directory: Path) -> None:
        directory.mkdir()
        token_file = directory / "token"
        token_file.write_text(SECRET + "\n")
        self.http_port, self.grpc_port = free_port(), free_port()
        args = ["--workers", str(workers), "--port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        env = {"OTEL_EXPORTER_CONTEXT_ENDPOINT": "http://127.0.0.1:9", "OTEL_CONTEXT_SERVE_STATE_DIR": str(directory)}
        if way == "--token":
            args += ["--token", SECRET]
        elif way == "--token-file":
            args += ["--token-file", str(token_file)]
        elif way == "OTEL_CONTEXT_SERVE_TOKEN_FILE":
            env[way] = str(token_file)
        else:
            env[way] = SECRET
        self.process = Process([sys.executable, "-m", "otel_context.cli", "serve", *args], clean_env(**env))
        self.ready = f"otel-context serve: {workers} workers" if workers > 1 else "otel-context serve: OTLP/HTTP"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while self.ready not in self.process.text() and self.process.proc.poll() is None:
            assert time.monotonic() < deadline, self.process.text()[-2000:]
            time.sleep(0.05)
        assert self.ready in self.process.text(), self.process.text()[-2000:]

    def worker_pids(self) -> list[int]:
        found = re.search(r"pids ([0-9, ]+)\)", self.process.text())
        return [int(pid) for pid in found.group(1).split(", ")] if found else []


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    started = {case: Sidecar(*case, root / f"{case[0].strip('-')}-{case[1]}") for case in CASES}
    try:
        for sidecar in started.values():
            sidecar.wait_ready()
        yield started
    finally:
        for sidecar in started.values():  # SIGTERM to all first: they stop together
            if sidecar.process.proc.poll() is None:
                sidecar.process.proc.terminate()
        for sidecar in started.values():
            sidecar.process.stop()


def http_status(url: str, token: str | None, body: bytes | None = None) -> int:
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def grpc_code(port: int, token: str | None) -> grpc.StatusCode:
    """An empty Export on a connection of its own (no subchannel shared with another channel)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        try:
            export(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("way", "workers"), CASES, ids=[f"{way}-{n}-worker" for way, n in CASES])
def test_the_token_is_required_over_http_and_grpc(sidecars, way, workers):
    sidecar = sidecars[(way, workers)]
    traces = f"http://127.0.0.1:{sidecar.http_port}/v1/traces"
    stats = f"http://127.0.0.1:{sidecar.http_port}/stats"
    for _ in range(ATTEMPTS):
        assert http_status(traces, None, b"") == 401
        assert http_status(traces, "a-wrong-guess", b"") == 401
        assert http_status(stats, None) == 401
    assert {grpc_code(sidecar.grpc_port, token) for token in (None, "a-wrong-guess") for _ in range(ATTEMPTS // 2)} == {
        grpc.StatusCode.UNAUTHENTICATED
    }
    assert http_status(traces, SECRET, b"") == 200
    assert http_status(stats, SECRET) == 200
    assert grpc_code(sidecar.grpc_port, SECRET) is grpc.StatusCode.OK


@pytest.mark.parametrize("way", WAYS)
def test_no_worker_command_line_shows_the_token(sidecars, way):
    pids = sidecars[(way, 2)].worker_pids()
    assert len(pids) == 2
    for pid in pids:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "otel_context.cli serve" in command_line
        assert SECRET not in command_line, command_line
