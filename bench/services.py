"""The servers benchmarks talk to: the local Context API in its own process, and a trivial OTLP sink.

Both answer `POST /_admin/faults {"latency_s": S}` (bearer token) and `GET /_admin/stats`, so a worker
adds the same latency to whichever endpoint its set-up exports to.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.request
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

TOKEN = "bench-token"


def http_json(url: str, body: Any = None, token: str = TOKEN, timeout: float = 30.0) -> Any:
    """GET (no body) or POST JSON with the bearer token; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def set_latency(base_url: str, latency_s: float, token: str = TOKEN) -> None:
    """Add `latency_s` to every answer of a local API or sink (0 clears the faults)."""
    http_json(f"{base_url}/_admin/faults", {"latency_s": latency_s} if latency_s else {}, token)


class LocalApiProcess:
    """`python -m otel_context.local_api --port 0 --token T` as a child process."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 30.0) -> LocalApiProcess:
        command = [sys.executable, "-m", "otel_context.local_api", "--port", "0", "--fault-injection"]
        env = {**os.environ, "OTEL_CONTEXT_LOCAL_API_TOKEN": self.token}  # not in argv, where ps shows it
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "Local Context API listening on http://127.0.0.1:N"
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the local Context API did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        return self

    def threads(self) -> int:
        """Threads stored so far."""
        return int(http_json(f"{self.url}/healthz", token=self.token)["threads"])

    def requests(self) -> dict[str, int]:
        return http_json(f"{self.url}/_admin/stats", token=self.token)["requests"]

    def set_latency(self, latency_s: float) -> None:
        set_latency(self.url, latency_s, self.token)

    def set_faults(self, **spec: object) -> None:
        """The local API's fault plan (`otel_context/local_api/faults.py`); none clears it."""
        http_json(f"{self.url}/_admin/faults", spec, self.token)

    def admin_stats(self) -> dict[str, object]:
        return http_json(f"{self.url}/_admin/stats", token=self.token)

    def stop(self) -> None:
        stop_process(self._process, grace_s=10)
        self._process = None

    def __enter__(self) -> LocalApiProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OtlpSink:
    """An OTLP/HTTP endpoint that counts spans and answers 200 with an empty `ExportTraceServiceResponse`."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.latency_s = 0.0
        self.requests = 0
        self.spans = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-sink", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        parsed = ExportTraceServiceRequest.FromString(body)
        self.requests += 1
        self.spans += sum(len(s.spans) for r in parsed.resource_spans for s in r.scope_spans)
        payload = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=payload, content_type="application/x-protobuf")

    async def _faults(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.latency_s = float(spec.get("latency_s", 0.0))
        return web.json_response({"latency_s": self.latency_s})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "spans": self.spans})

    async def _start(self) -> int:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/_admin/faults", self._faults)
        app.router.add_get("/_admin/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return self._runner.addresses[0][1]

    def start(self) -> OtlpSink:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen[Any] | None, *, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `grace_s`; nothing to do if it already ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
