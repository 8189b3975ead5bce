"""Benchmark 3: OTLP/HTTP requests of 100 spans per second through `otel-context serve`, delivering to the
local Context API, against the raw `ExportTraceServiceRequest.FromString` rate of the same bodies.

The sidecar runs as its own process (`python -m otel_context.cli serve`); a concurrent aiohttp client in
this process posts the bodies, retrying 503s as a Collector would, and the run ends when every thread
is uploaded. A single-threaded breakdown then times each in-process stage on the same bodies.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

from otel_context import ContextSpanExporter
from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.config import resolve_settings
from otel_context.delivery.item import encode_thread
from otel_context.model import ConversationThread
from otel_context.spans.otlp import decode_protobuf, records_from_request
from otel_context.spans.otlp_limits import RequestLimits, check_protobuf

from .apps import SpanMix
from .machine import pid_cpu_s
from .report import SIDECAR, Section, Target, num, table
from .services import TOKEN, LocalApiProcess, http_json, stop_process
from .stats import median

SPANS_PER_REQUEST = 100
SERVE_TOKEN = "bench-collector"
# spans delivered per second of the serve process's CPU, durable acknowledgement on (issue 25; issue 15 asked 15,000)
SPANS_PER_CPU_S_GOAL = 25_000
WARMUP = 2  # requests before the clock starts, not part of the measured bodies
UPLOAD = "upload: delivery queue, 1 worker, one POST per run, one at a time (client CPU)"


@dataclass
class SidecarRun:
    requests: int
    spans: int
    threads: int
    concurrency: int
    settle_ms: int
    accept_s: float
    done_s: float
    answered_503: int
    counters: dict[str, int]
    raw_rate: float
    stages: dict[str, float] = field(default_factory=dict)  # µs of CPU per request, single thread
    upload_wall_us: float = 0.0  # per upload, waiting for the local API included
    threads_per_request: float = 0.0
    cpu_s: float = 0.0  # the serve process's user + system CPU from the first request to the last upload
    peak_rss_mb: float = 0.0
    peer: Any = None  # `phoenix.PhoenixRun` on the same bodies (full mode), or None
    peer_note: str = "not run (`--quick` or `--no-phoenix`)"

    @property
    def cpu_us_per_span(self) -> float:
        return self.cpu_s * 1e6 / self.spans if self.spans else 0.0

    @property
    def spans_per_cpu_s(self) -> float:
        return self.spans / self.cpu_s if self.cpu_s else 0.0

    @property
    def accepted_rate(self) -> float:
        return self.requests / self.accept_s

    @property
    def delivered_rate(self) -> float:
        return self.requests / self.done_s


class ServeProcess:
    """`otel-context serve` on a free port, HTTP only, delivering to `api_url`; `spool`: with `--spool-dir`."""

    def __init__(self, api_url: str, settle_ms: int, *, spool: bool = False, root: Path | None = None) -> None:
        self.api_url = api_url
        self.root = root or Path(__file__).resolve().parent.parent  # another checkout, to compare against
        self.settle_ms = settle_ms
        self.spool = spool
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in __exit__)
        self._state = tempfile.TemporaryDirectory(prefix="bench-serve-")  # cwd and state: never the repo

    def __enter__(self) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
        env["OTEL_EXPORTER_CONTEXT_TOKEN"] = TOKEN
        env["OTEL_CONTEXT_SERVE_STATE_DIR"] = os.path.join(self._state.name, "state")
        env["PYTHONPATH"] = str(self.root) + os.pathsep + env.get("PYTHONPATH", "")
        command = [
            sys.executable,
            "-m",
            "otel_context.cli",
            "serve",
            "--port",
            "0",
            "--grpc-port",
            "-1",
            "--token",
            SERVE_TOKEN,
            "--settle-ms",
            str(self.settle_ms),
            "--endpoint",
            self.api_url,
        ]
        if self.spool:
            command += ["--spool-dir", os.path.join(self._state.name, "spool")]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, cwd=self._state.name
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "otel-context serve: OTLP/HTTP on http://h:p/v1/traces, ..."
        if "OTLP/HTTP on " not in line:
            self.__exit__()
            self._log.seek(0)
            raise RuntimeError(f"otel-context serve did not start: {line!r} {self._log.read()[-2000:]}")
        self.url = line.split("OTLP/HTTP on ", 1)[1].split("/v1/traces", 1)[0]
        return self

    def stats(self) -> dict[str, int]:
        return http_json(f"{self.url}/stats", token=SERVE_TOKEN)["counters"]

    def cpu_s(self) -> float:
        assert self._process is not None
        return pid_cpu_s(self._process.pid)

    def peak_rss_mb(self) -> float:
        assert self._process is not None
        return peak_rss_mb(self._process.pid)

    def __exit__(self, *exc: object) -> None:
        stop_process(self._process, grace_s=60)
        self._process = None
        self._log.close()
        self._state.cleanup()


class _SpanIds:
    """New span ids, unique across the run (the mix copies its traces with new trace ids only): a
    store that keys spans by span id alone, as Arize Phoenix does, must see every span."""

    def __init__(self, seed: int = 15) -> None:
        self._random = random.Random(seed)
        self._ids: dict[tuple[bytes, bytes], bytes] = {}

    def _new(self, trace_id: bytes, span_id: bytes) -> bytes:
        key = (trace_id, span_id)
        if key not in self._ids:
            self._ids[key] = self._random.getrandbits(64).to_bytes(8, "big")
        return self._ids[key]

    def fresh(self, request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.span_id = self._new(span.trace_id, span.span_id)
                    if span.parent_span_id:
                        span.parent_span_id = self._new(span.trace_id, span.parent_span_id)
        return request


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of process `pid`, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> int:
    """POST every body with `concurrency` connections; 503s are retried shortly after. Returns the 503 count."""
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {SERVE_TOKEN}"}
    pending = iter(bodies)
    refused = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal refused
        for body in pending:
            while True:
                async with session.post(f"{url}/v1/traces", data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        break
                    if response.status != 503:
                        raise RuntimeError(f"sidecar answered {response.status}")
                refused += 1
                await asyncio.sleep(0.05)  # a Collector would wait Retry-After; keep the pipe full instead

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return refused


def raw_rate(bodies: list[bytes], repeats: int = 5) -> float:
    """Requests/s of `ExportTraceServiceRequest.FromString` alone (median of `repeats`)."""
    rates = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        for body in bodies:
            ExportTraceServiceRequest.FromString(body)
        rates.append(len(bodies) / (time.perf_counter() - started))
    return median(rates)


SESSIONS = "sessions: `Appends.build` over `SqliteSessions` (turns placed, one transaction per batch)"
LIMITS = "`check_protobuf` (work limits)"


def session_fold(state_dir: str) -> tuple[Callable[[list[ConversationThread]], list[ConversationThread]], Any] | None:
    """The sidecar's placing of session turns (`otel_context/preparation/appends.py` over the SQLite book), if
    enabled: as the pipeline does, the runs of one batch in one `Appends.build`."""
    try:
        from otel_context.preparation.appends import Appends
        from otel_context.preparation.session_sqlite import SqliteSessions
    except ImportError:
        return None
    settings = resolve_settings()
    if not getattr(settings, "sessions", False):
        return None
    store = SqliteSessions(Path(state_dir) / "sessions.db", settings.session_max_turns, settings.session_ttl_s)
    appends = Appends(store, settings.max_pending_traces)

    def fold(threads: list[ConversationThread]) -> list[ConversationThread]:
        return [append.sent for append in appends.build(threads).appends]

    return fold, store


def breakdown(bodies: list[bytes], api_url: str, sends: int) -> tuple[dict[str, float], float, float]:
    """µs of CPU per request of each stage, single thread; threads per request; wall µs per upload."""
    stages: dict[str, float] = {LIMITS: 0.0, "`decode_protobuf`": 0.0, "`records_from_request`": 0.0}
    stages.update({"`TraceBuffer.add` (assemble + convert)": 0.0, SESSIONS: 0.0, "`encode_thread` (JSON bodies)": 0.0})
    clock = time.thread_time_ns  # this thread's CPU: what each stage costs, whatever else the machine runs
    buffer = TraceBuffer()
    limits = RequestLimits()
    thread_bodies: list[bytes] = []
    all_threads: list[ConversationThread] = []
    with tempfile.TemporaryDirectory() as state_dir:
        sessions = session_fold(state_dir)
        if sessions is None:
            del stages[SESSIONS]
        gc.collect()
        for body in bodies:
            t0 = clock()
            check_protobuf(body, limits)
            t1 = clock()
            request = decode_protobuf(body)
            t2 = clock()
            records, _ = records_from_request(request)
            t3 = clock()
            threads = buffer.add(records)
            t4 = clock()
            if sessions is not None:
                threads = sessions[0](threads)
            t5 = clock()
            encoded = [encode_thread(thread) for thread in threads]
            t6 = clock()
            thread_bodies.extend(encoded)
            all_threads.extend(threads)
            took = (t1 - t0, t2 - t1, t3 - t2, t4 - t3) + ((t5 - t4,) if sessions is not None else ()) + (t6 - t5,)
            for name, ns in zip(stages, took, strict=True):
                stages[name] += ns
        if sessions is not None:
            sessions[1].close()
    per_request = {name: took / 1000 / len(bodies) for name, took in stages.items()}
    threads_per_request = len(thread_bodies) / len(bodies)
    cpu_per_thread, wall_per_thread = upload_us_per_thread(api_url, all_threads[: sends + 1])
    per_request[UPLOAD] = cpu_per_thread * threads_per_request
    return per_request, threads_per_request, wall_per_thread


def upload_us_per_thread(api_url: str, threads: list[ConversationThread]) -> tuple[float, float]:
    """CPU and wall µs per thread uploaded by the exporter's delivery queue with a single worker (one POST at a
    time). The CPU is this process's (the worker's; the local API runs in its own): the client's cost.

    Every append is one upload: a session's turns are each an upload of their own.
    """
    exporter = ContextSpanExporter(endpoint=api_url, token=TOKEN, concurrency=1, register_metrics=False)
    try:
        exporter.delivery.submit(threads[:1])  # connect once
        exporter.force_flush(60_000)
        started, cpu_started = time.perf_counter_ns(), time.process_time_ns()
        exporter.delivery.submit(threads[1:])
        exporter.force_flush(600_000)
        took, cpu = time.perf_counter_ns() - started, time.process_time_ns() - cpu_started
        uploaded = exporter.stats()["threads_uploaded"] - 1
    finally:
        exporter.shutdown(60_000)
    if uploaded != len(threads) - 1:
        raise RuntimeError(f"upload sample: {uploaded} of {len(threads) - 1} threads uploaded")
    return cpu / 1000 / uploaded, took / 1000 / uploaded


def _roots(batches: list[list[ReadableSpan]]) -> int:
    """Threads to expect: one per root span."""
    return sum(1 for batch in batches for span in batch if span.parent is None)


class HasCounters(Protocol):
    """A sidecar the bench runs (`ServeProcess` here, the soak's `SoakServe`): its counters from `/stats`."""

    def stats(self) -> dict[str, int]: ...


def wait_delivered(serve: HasCounters, converted: int, stall_s: float = 60.0) -> dict[str, int]:
    """Poll the sidecar's counters until `converted` threads are built and none is left to upload.

    Every run is one upload (a session turn appends to its session's thread). Raises when the counters
    stop moving for `stall_s`, instead of waiting for ever.
    """
    last: tuple[int, ...] = ()
    moved = time.perf_counter()
    empty: dict[str, int] | None = None
    while True:
        counters = serve.stats()
        built = counters["threads_converted"] + counters.get("conversion_errors", 0)
        if built >= converted and counters["threads_queued"] == 0:
            # A thread leaves the queue just before its upload is counted: settled once the count holds.
            if empty is not None and empty["threads_uploaded"] == counters["threads_uploaded"]:
                return counters
            empty = counters
            time.sleep(0.05)
            continue
        now = tuple(counters[k] for k in ("spans_received", "threads_converted", "threads_uploaded"))
        if now != last:
            last, moved = now, time.perf_counter()
        elif time.perf_counter() - moved > stall_s:
            raise RuntimeError(f"sidecar stalled short of {converted} threads delivered: {counters}")
        time.sleep(0.02)


def run(
    api: LocalApiProcess,
    mix: SpanMix,
    *,
    requests: int,
    concurrency: int = 4,
    settle_ms: int = 100,
    sends: int = 200,
    peer: bool = False,
    log: Callable[[str], None] = print,
) -> SidecarRun:
    batches = mix.span_batches((requests + WARMUP) * SPANS_PER_REQUEST, SPANS_PER_REQUEST)[: requests + WARMUP]
    warm_batches, batches = batches[:WARMUP], batches[WARMUP:]
    ids = _SpanIds()
    warm_bodies = [ids.fresh(encode_spans(batch)).SerializeToString() for batch in warm_batches]
    bodies = [ids.fresh(encode_spans(batch)).SerializeToString() for batch in batches]
    spans = sum(len(b) for b in batches)
    threads = _roots(batches)
    with ServeProcess(api.url, settle_ms, spool=True) as serve:  # durable: 200 once the request is fsync'd
        asyncio.run(post_all(serve.url, warm_bodies, 1))  # warm-up: connections, first conversions
        warm = wait_delivered(serve, _roots(warm_batches))
        cpu_before = serve.cpu_s()
        started = time.perf_counter()
        refused = asyncio.run(post_all(serve.url, bodies, concurrency))
        accept_s = time.perf_counter() - started
        counters = wait_delivered(serve, warm["threads_converted"] + threads)
        done_s = time.perf_counter() - started
        cpu_s = serve.cpu_s() - cpu_before
        peak_mb = serve.peak_rss_mb()
    log(
        f"  sidecar: {requests} requests accepted in {accept_s:.1f} s, delivered in {done_s:.1f} s, "
        f"{cpu_s * 1e6 / spans:.1f} µs CPU per span ({spans / cpu_s if cpu_s else 0:,.0f} spans per CPU-second)"
    )
    delta = {key: counters[key] - warm.get(key, 0) for key in counters if isinstance(counters[key], int)}
    result = SidecarRun(
        requests, spans, threads, concurrency, settle_ms, accept_s, done_s, refused, delta, raw_rate(bodies)
    )
    result.cpu_s, result.peak_rss_mb = cpu_s, peak_mb
    if peer:
        from . import phoenix

        try:
            warm_spans = sum(len(b) for b in warm_batches)
            result.peer = phoenix.run(warm_bodies, bodies, spans, warm_spans, concurrency=concurrency, log=log)
        except Exception as error:  # the peer is a reference, not a gate: say why it is missing
            result.peer_note = f"not measured: {type(error).__name__}: {str(error)[:300]}"
            log(f"  phoenix {result.peer_note}")
    result.stages, result.threads_per_request, result.upload_wall_us = breakdown(bodies, api.url, sends)
    return result


def section(run: SidecarRun) -> Section:
    rows = [
        (
            "`ExportTraceServiceRequest.FromString` alone",
            num(run.raw_rate, 0),
            num(run.raw_rate * SPANS_PER_REQUEST, 0),
            "1.00",
        ),
        (
            "otel-context serve: answered 200 (converted and queued)",
            num(run.accepted_rate, 0),
            num(run.accepted_rate * SPANS_PER_REQUEST, 0),
            f"{run.accepted_rate / run.raw_rate:.3f}",
        ),
        (
            "otel-context serve: every thread uploaded to the local API",
            num(run.delivered_rate, 0),
            num(run.delivered_rate * SPANS_PER_REQUEST, 0),
            f"{run.delivered_rate / run.raw_rate:.3f}",
        ),
    ]
    total = sum(run.stages.values())
    in_process = sum(v for k, v in run.stages.items() if k != UPLOAD)
    stage_rows = [(name, num(us), f"{us / total:.0%}", num(1e6 / us, 0)) for name, us in run.stages.items()]
    stage_rows.append(("total", num(total), "100%", num(1e6 / total, 0)))
    counters = run.counters
    value = run.delivered_rate / run.raw_rate
    body = "\n".join(
        [
            f"{run.requests:,} OTLP/HTTP protobuf requests of {SPANS_PER_REQUEST} spans ({run.spans:,} spans, "
            f"{run.threads:,} traces) from the realistic mix, posted by an aiohttp client with {run.concurrency} "
            f"connections to `otel-context serve` (own process, settle {run.settle_ms} ms, durable acknowledgement: "
            "`--spool-dir`, 200 once the request is fsync'd in its write-ahead log), which delivers to the "
            f"local Context API (own process). 503 answers (backlog full) retried after 50 ms: {run.answered_503:,}. "
            f"Sidecar counters: threads_converted={counters.get('threads_converted')}, "
            f"threads_uploaded={counters.get('threads_uploaded')}, threads_retried={counters.get('threads_retried')}, "
            f"threads_dropped={counters.get('threads_dropped')}.",
            "",
            table(("path", "requests/s", "spans/s", "× FromString"), rows),
            "",
            f"Ratio (every thread uploaded) / FromString: {value:.3f}; answered-200 rate / FromString: "
            f"{run.accepted_rate / run.raw_rate:.3f} (no longer a target: the CPU per span below is).",
            "",
            f"Where the CPU goes, per request of {SPANS_PER_REQUEST} spans ({run.threads_per_request:.1f} threads), "
            "each stage alone on one thread, same bodies (`otel_context/spans/`, `otel_context/assembly/`, "
            "`otel_context/preparation/session_sqlite.py`, `otel_context/delivery/`); the uploads' row is the "
            f"client's CPU (an upload waits {num(run.upload_wall_us)} µs for the local API, its own process):",
            "",
            table(("stage", "µs per request", "share", "requests/s alone"), stage_rows),
            "",
            f"In-process stages without upload: {num(in_process)} µs per request ({num(1e6 / in_process, 0)} "
            f"requests/s, {1e6 / in_process / run.raw_rate:.3f} × FromString). Every run is one upload: "
            "a session turn appends only its own messages to its session's thread. With the uploads, the stages "
            f"alone cost {num(total)} µs per request: **{num(SPANS_PER_REQUEST * 1e6 / total, 0)} spans per "
            "CPU-second is what this pipeline reaches with nothing else to pay**: no HTTP server (aiohttp), no "
            "write-ahead log or spool, no hand-offs between the event loop, the intake thread and the upload "
            f"workers (one GIL). The serve process below spends {num(run.cpu_us_per_span * SPANS_PER_REQUEST)} µs "
            f"per request; the goal, {SPANS_PER_CPU_S_GOAL:,} spans per CPU-second, is "
            f"{num(SPANS_PER_REQUEST * 1e6 / SPANS_PER_CPU_S_GOAL)} µs.",
        ]
    )
    peer_rows = [
        (
            "`otel-context serve` + local Context API",
            num(run.spans / run.done_s, 0),
            num(run.cpu_us_per_span),
            num(run.spans_per_cpu_s, 0),
            num(run.peak_rss_mb, 0),
        )
    ]
    floor_us = 1e6 / (run.raw_rate * SPANS_PER_REQUEST)  # FromString's CPU per span (one thread, wall ≈ CPU)
    peer = run.peer
    if peer is not None:
        peer_rows.append(
            (
                f"Arize Phoenix {peer.version} (SQLite)",
                num(peer.spans_per_s, 0),
                num(peer.cpu_us_per_span),
                num(1e6 / peer.cpu_us_per_span, 0),
                num(peer.peak_rss_mb, 0),
            )
        )
        lead = (
            f"Lead over Phoenix in this run: {run.spans / run.done_s / peer.spans_per_s:,.1f}x the spans/s, "
            f"{peer.cpu_us_per_span / run.cpu_us_per_span:,.1f}x less CPU per span."
        )
    else:
        lead = f"Arize Phoenix (the Python peer, `bench/phoenix.py`, full mode only): {run.peer_note}."
    body += "\n\n" + "\n".join(
        [
            "CPU per span, the same run: the serve process's user + system CPU (all its threads, `/proc`) from the "
            "first measured request until every thread is uploaded, over the spans; the peer gets the same bodies "
            f"from the same client ({run.concurrency} connections) and is done when its database holds every span.",
            "",
            table(("server", "spans/s (wall)", "CPU µs per span", "spans per CPU-second", "peak MB"), peer_rows),
            "",
            lead,
            "",
            f"The floor, the protobuf decode of the same bodies alone: {num(floor_us)} µs per span; the sidecar "
            f"spends {run.cpu_us_per_span / floor_us:,.0f}× that (the goal, {SPANS_PER_CPU_S_GOAL:,} spans per "
            f"CPU-second, is {1e6 / SPANS_PER_CPU_S_GOAL / floor_us:,.0f}× it).",
        ]
    )
    per_cpu = Target(
        "sidecar spans delivered per CPU-second (one worker)",
        num(run.spans_per_cpu_s, 0),
        f"≥ {SPANS_PER_CPU_S_GOAL:,}",
        run.spans_per_cpu_s >= SPANS_PER_CPU_S_GOAL,
    )
    return Section(SIDECAR, body, [per_cpu])
