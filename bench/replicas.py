"""Benchmark: `serve --workers 1` against `--workers 2`, and one against three replicas behind the real
Collector (`load_balancing`, collector-config/gateway.yaml) sharing Redis, in one run.

`python -m bench.replicas [--requests N]` prints a markdown table and writes bench/replicas.md.
Each set-up receives the same OTLP/HTTP bodies (100 spans each, the benchmark's LangChain span mix,
with sessions; span ids new to each set-up) from a concurrent client that retries 503s, and delivers
to a minimal Context API stand-in in its own process, which answers at once and counts uploads, so the figures are the
pipeline's own cost and not the API's. A run ends with the last upload; conversations/s is the number
of root spans sent divided by the time from the first request to the last upload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from . import machine
from .apps import SpanMix, capture_mix
from .report import WORKERS, Section, Target, num, table
from .services import TOKEN
from .sidecar import SERVE_TOKEN, SPANS_PER_REQUEST, _roots, _SpanIds, post_all

REPO = Path(__file__).resolve().parent.parent
RATES = (10, 100, 1_000, 10_000)
HEADROOM = 0.7  # plan replicas to run at 70 % of their measured rate
WORKERS_GOAL = 1.6
CLIENTS = 16  # connections: SO_REUSEPORT spreads connections, not requests, over the workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a Context API stand-in that costs next to nothing ------------------------------------------------


class _Sink(asyncio.Protocol):
    """Answers every HTTP/1.1 request with a fixed 201 (keep-alive); counts uploads and their last time."""

    uploads = 0
    last = 0.0
    REPLY = b'{"status":"success","data":{"id":"x"}}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            if head.startswith("GET /count"):
                body = json.dumps({"uploads": _Sink.uploads, "last": _Sink.last}).encode()
            else:
                _Sink.uploads += 1
                _Sink.last = time.time()
                body = self.REPLY
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


def run_sink(port: int) -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Sink, "127.0.0.1", port))
    print("sink ready", flush=True)
    loop.run_until_complete(server.serve_forever())


def sink_count(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/count", timeout=10) as response:
        return json.load(response)


# -- the set-ups -------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(PYTHONPATH=str(REPO), OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN, OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN, **extra)
    return env


def _wait_line(process: subprocess.Popen[str], needle: str, timeout_s: float = 60.0) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if needle in line:
            return line
        if not line and process.poll() is not None:
            break
    raise RuntimeError(f"no {needle!r} from {process.args}")


@dataclass
class Figure:
    name: str
    processes: int  # otel-context processes (workers x replicas)
    conversations: int
    seconds: float
    uploads: int
    spans: int = 0
    cpu_s: float = 0.0  # user + system CPU of every otel-context process (workers, supervisor) in the run

    @property
    def rate(self) -> float:
        return self.conversations / self.seconds

    @property
    def spans_per_cpu_s(self) -> float:
        return self.spans / self.cpu_s if self.cpu_s else 0.0


class Bench:
    def __init__(self, requests: list[bytes], conversations: int, work: Path, sink_url: str) -> None:
        self.requests, self.conversations, self.work, self.sink_url = requests, conversations, work, sink_url
        self.set_ups = 0
        self.processes: list[subprocess.Popen[str]] = []

    def fresh_bodies(self) -> list[bytes]:
        """The requests with span ids new to this set-up: a shared session book (Redis) must not recognise the
        turns of an earlier set-up as repeats, and skip them."""
        self.set_ups += 1
        ids = _SpanIds(seed=self.set_ups)
        return [ids.fresh(ExportTraceServiceRequest.FromString(body)).SerializeToString() for body in self.requests]

    def serve(self, name: str, workers: int, grpc: bool, **env: str) -> tuple[int, int]:
        http, grpc_port = free_port(), free_port() if grpc else -1
        state = self.work / f"{name}-{len(self.processes)}"
        args = ["serve", "--port", str(http), "--grpc-port", str(grpc_port), "--workers", str(workers)]
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_context.cli", *args, "--settle-ms", "100", "--endpoint", self.sink_url],
            env=_env(OTEL_CONTEXT_SERVE_STATE_DIR=str(state), **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=self.work,
        )
        self.processes.append(process)
        _wait_line(process, "otel-context serve:")
        return http, grpc_port

    def cpu_s(self) -> float:
        return sum(machine.tree_cpu_s(process.pid) for process in self.processes)

    def measure(self, name: str, processes: int, url: str) -> Figure:
        bodies = self.fresh_bodies()
        before = sink_count(self.sink_url)["uploads"]
        cpu_before = self.cpu_s()
        started = time.time()
        asyncio.run(post_all(url, bodies, concurrency=CLIENTS))
        last, quiet_since = before, time.monotonic()
        while time.monotonic() - quiet_since < 2.0:  # done: no upload for 2 s
            time.sleep(0.1)
            count = sink_count(self.sink_url)
            if count["uploads"] != last:
                last, quiet_since = count["uploads"], time.monotonic()
        count = sink_count(self.sink_url)
        spans = len(bodies) * SPANS_PER_REQUEST
        seconds, uploads, cpu_s = count["last"] - started, count["uploads"] - before, self.cpu_s() - cpu_before
        return Figure(name, processes, self.conversations, seconds, uploads, spans, cpu_s)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def collector(work: Path, replicas: list[int]) -> tuple[subprocess.Popen[str], int]:
    """The shipped gateway.yaml in otelcol-context, only its addresses moved; returns it and its HTTP port."""
    binary = subprocess.run(
        [sys.executable, str(REPO / "collector-config" / "build.py")], capture_output=True, text=True, check=True
    ).stdout.strip()
    http, health = free_port(), free_port()
    overlay = {
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health}"}},
        "receivers": {"otlp": {"protocols": {"grpc": None, "http": {"endpoint": f"127.0.0.1:{http}"}}}},
        "exporters": {
            "load_balancing/otel_context": {
                "resolver": {"static": {"hostnames": [f"127.0.0.1:{port}" for port in replicas]}}
            }
        },
        "service": {"telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}}},
    }
    path = work / f"overlay-{len(replicas)}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    process = subprocess.Popen(
        [binary, "--config", str(REPO / "collector-config" / "gateway.yaml"), "--config", str(path)],
        env={**_env(), "GOMAXPROCS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health}/", timeout=1).close()
            return process, http
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the Collector did not start")


def redis_server(work: Path) -> tuple[subprocess.Popen[str], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (Debian: apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=work)
    time.sleep(0.3)
    return process, f"redis://127.0.0.1:{port}/0"


def run(requests: int, log=print, *, replicas: bool = True, mix: SpanMix | None = None) -> list[Figure]:
    """The worker set-ups, then (`replicas`) one and three replicas behind the built Collector.

    `mix`: the spans captured already (the instrumentation captures once per process)."""
    mix = mix or SpanMix(capture_mix())
    batches = mix.span_batches(requests * SPANS_PER_REQUEST, SPANS_PER_REQUEST)[:requests]
    bodies = [encode_spans(batch).SerializeToString() for batch in batches]
    conversations = _roots(batches)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        work = Path(tmp)
        sink_port = free_port()
        sink = subprocess.Popen(
            [sys.executable, "-m", "bench.replicas", "--sink", str(sink_port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        _wait_line(sink, "sink ready")
        redis, redis_url = redis_server(work)
        bench = Bench(bodies, conversations, work, f"http://127.0.0.1:{sink_port}")
        try:
            warm = bodies[:4]
            redis_book = {"OTEL_EXPORTER_CONTEXT_SESSION_DB": redis_url}
            setups = [
                ("SQLite sessions", 1, {}),
                ("SQLite sessions", 2, {}),
                ("SQLite sessions, trace routing off", 2, {"OTEL_CONTEXT_SERVE_TRACE_ROUTING": "false"}),
                ("Redis sessions", 1, redis_book),
                ("Redis sessions", 2, redis_book),
            ]
            for label, workers, env in setups:
                http, _ = bench.serve(f"workers{workers}", workers, grpc=False, **env)
                url = f"http://127.0.0.1:{http}"
                asyncio.run(post_all(url, warm, 2))  # warm-up: imports, connections
                time.sleep(1.0)  # its uploads done before the count starts
                name = f"`serve --workers {workers}`, {label}"
                figures.append(bench.measure(name, workers, url))
                log(f"  {name}: {figures[-1].rate:,.0f} conversations/s")
                bench.stop()
            for count in (1, 3) if replicas else ():
                ports = [bench.serve("replica", 1, grpc=True, OTEL_EXPORTER_CONTEXT_SESSION_DB=redis_url)[1]]
                ports += [
                    bench.serve("replica", 1, grpc=True, OTEL_EXPORTER_CONTEXT_SESSION_DB=redis_url)[1]
                    for _ in range(count - 1)
                ]
                gateway, http = collector(work, ports)
                try:
                    url = f"http://127.0.0.1:{http}"
                    asyncio.run(post_all(url, warm, 2))
                    time.sleep(1.0)
                    name = f"{count} replica{'s' if count > 1 else ''} behind the Collector, Redis sessions"
                    figures.append(bench.measure(name, count, url))
                    log(f"  replicas={count}: {figures[-1].rate:,.0f} conversations/s")
                finally:
                    gateway.terminate()
                    gateway.wait(30)
                    bench.stop()
        finally:
            bench.stop()
            redis.terminate()
            sink.terminate()
    return figures


def section(figures: list[Figure], requests: int) -> Section:
    """Benchmark 9 of `python -m bench`: the workers and replicas table, the scaling target, replicas to plan."""
    cores = machine.describe()["cores"]
    sqlite1, sqlite2, unrouted, one, two, *replicas = figures
    scaling = sqlite2.rate / sqlite1.rate
    per_core = max(sqlite2.rate, two.rate) / 2
    lines = [
        f"{requests} OTLP/HTTP requests of {SPANS_PER_REQUEST} spans ({one.conversations:,} conversations, with "
        "sessions) per set-up, from a client with 16 connections; delivery to a stand-in API that answers at once. "
        "CPU: every otel-context process of the set-up (workers and supervisor), from the first request to the "
        "last upload.",
        "",
        table(
            ["set-up", "otel-context processes", "conversations/s", "per process", "spans per CPU-second", "uploads"],
            [
                [
                    f.name,
                    f.processes,
                    num(f.rate, 0),
                    num(f.rate / f.processes, 0),
                    num(f.spans_per_cpu_s, 0),
                    f.uploads,
                ]
                for f in figures
            ],
            "lrrrrr",
        ),
        "",
        f"`--workers 2` / `--workers 1`: **{scaling:.2f}x** with the default SQLite book and trace routing on, "
        f"{two.rate / one.rate:.2f}x with Redis sessions, {unrouted.rate / sqlite1.rate:.2f}x with trace routing off "
        f"(goal ≥ {WORKERS_GOAL}x)"
        + (
            f"; three replicas / one behind the Collector: {replicas[1].rate / replicas[0].rate:.2f}x"
            if replicas
            else ""
        )
        + f" (all on {cores} cores, beside the client, Redis, the API stand-in"
        + (" and the Collector)." if replicas else ")."),
        "",
        f"Per core (the better `--workers 2` run, halved): {per_core:,.0f} conversations/s. "
        f"Replicas of one core each, at {HEADROOM:.0%} of that (at least 2 for availability):",
        "",
        table(
            ["conversations/s", "replicas (1 core each)"],
            [[f"{rate:,}", max(2, math.ceil(rate / (per_core * HEADROOM)))] for rate in RATES],
            "rr",
        ),
    ]
    target = Target(
        "`serve --workers 2` ÷ `--workers 1` (trace routing on)",
        f"{scaling:.2f}x",
        f"≥ {WORKERS_GOAL}x",
        scaling >= WORKERS_GOAL,
    )
    return Section(WORKERS, "\n".join(lines), [target])


def render(figures: list[Figure], requests: int) -> str:
    facts = machine.describe()
    part = section(figures, requests)
    return "\n".join(
        ["# Replicas and workers", "", ", ".join(f"{k}: {v}" for k, v in facts.items()), "", part.body, ""]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--workers-only", action="store_true", help="no replicas behind the Collector")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        run_sink(args.sink)
        return 0
    figures = run(args.requests, log=lambda m: print(m, file=sys.stderr, flush=True), replicas=not args.workers_only)
    text = render(figures, args.requests)
    (args.out / "replicas.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
