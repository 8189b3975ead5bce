"""Soak: the sidecar and an app exporting in process, each at a steady fraction of its measured capacity.

    python -m bench.soak [--minutes 10] [--rate-fraction 0.7] [--only sidecar,app] [--write]

1. Sidecar: a redis-server (the session store, `OTEL_EXPORTER_CONTEXT_SESSION_DB=redis://`), the local
   Context API (SQLite file) and `otel-context serve --spool-dir` (durable acknowledgement), each its own
   process on loopback. Its capacity is measured first (closed loop, `CAPACITY_CONCURRENCY` connections,
   spans acknowledged *and delivered* per second: a rate delivery cannot keep up with would only grow a
   backlog); then an open-loop client posts OTLP/HTTP protobuf bodies of whole traces (about 100 spans,
   the realistic mix, every trace with fresh ids, its session turns spread over open sessions) at
   `--rate-fraction` of it for `--minutes`. Per minute: the serve process's RSS, acknowledgement latency
   p50/p99 (from the scheduled send to the 200, so a stalled client or sidecar is not hidden), requests
   sent, acknowledged and refused. At the end, after delivery, every acknowledged trace must be stored
   exactly once: its user messages, read from the API's database by the `trace_id` every message carries,
   against what converting its template gives.
2. App: a child process with OpenLLMetry's LangChain instrumentation and
   `BatchSpanProcessor(ContextSpanExporter)`, calling LangChain chains on fake chat models (session turns
   and standalone chats, each call's question numbered) at `--rate-fraction` of its own measured call
   rate. Per minute: its RSS and call latency p50/p99; at the end every call's question stored once.

RSS is flat when, after a warm-up of the first `WARMUP_SHARE` of the run, its highest sample (one per
second) stays within `RSS_GOAL` of the sample at the end of the warm-up. Everything runs on 127.0.0.1,
bounded by `--minutes`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import machine
from .report import SOAK, Section, Target, num, table
from .services import TOKEN, LocalApiProcess, http_json, stop_process
from .sidecar import SERVE_TOKEN, SPANS_PER_REQUEST, wait_delivered
from .stats import percentile

HERE = Path(__file__).resolve().parent
STALL_S = 120.0  # no counter moving this long while waiting for delivery: the sidecar is stuck
REPO = HERE.parent
RSS_GOAL = 0.10
WARMUP_SHARE = 0.2
CAPACITY_CONCURRENCY = 8
CONNECTIONS = 64  # the open-loop client's connection limit: far above what 70 % of capacity needs
OPEN_SESSIONS = 32  # sessions taking turns at once: consecutive turns of one session land in different bodies
TURNS_PER_SESSION = 6
RETRIES = 5  # 503 answers a body may get before the client gives it up, as a Collector's retry would
REQUEST_TIMEOUT_S = 60.0
SESSION_SUFFIXES = ("session_id", "session.id", "conversation.id")
CALL_MARK = re.compile(r"\[call (\d+)\]")
Log = Callable[[str], None]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tree_rss_mb(pid: int) -> float:
    """VmRSS of `pid` and every descendant (a `--workers` supervisor and its workers), MB; 0 once gone."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / 1024


@dataclass
class Interval:
    """One minute (or `--interval-s`) of a soak."""

    index: int
    sent: int = 0
    acknowledged: int = 0
    refused: int = 0  # 503 answers, each retried
    failed: int = 0  # given up: too many 503s, another status, a timeout or a broken connection
    latencies_ms: list[float] = field(default_factory=list)
    rss_mb: float = 0.0  # the last sample of the interval
    rss_max_mb: float = 0.0
    backlog: int = -1  # the sidecar's threads_queued at the interval's end (-1: not read)

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass
class RssTrack:
    """RSS samples (seconds from the soak's start, MB) and the flatness verdict."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def warmup_s(self) -> float:
        return self.duration_s * WARMUP_SHARE

    @property
    def baseline_mb(self) -> float:
        before = [mb for t, mb in self.samples if t <= self.warmup_s]
        return before[-1] if before else math.nan

    @property
    def peak_after_mb(self) -> float:
        after = [mb for t, mb in self.samples if t > self.warmup_s]
        return max(after) if after else math.nan

    @property
    def growth(self) -> float:
        return self.peak_after_mb / self.baseline_mb - 1

    @property
    def flat(self) -> bool:
        return not math.isnan(self.growth) and self.growth <= RSS_GOAL

    def fill(self, intervals: list[Interval], interval_s: float) -> None:
        for interval in intervals:
            start, end = interval.index * interval_s, (interval.index + 1) * interval_s
            inside = [mb for t, mb in self.samples if start < t <= end]
            if inside:
                interval.rss_mb, interval.rss_max_mb = inside[-1], max(inside)


@dataclass
class Exactness:
    """What the API stored, against what was acknowledged (or called)."""

    expected: int  # traces acknowledged (sidecar) or calls made (app)
    stored_once: int
    missing: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)  # stored more often than sent
    unacknowledged: int = 0  # stored, though the client never saw its 200 (a timeout): not an error
    threads: int = 0
    messages: int = 0

    @property
    def met(self) -> bool:
        return not self.missing and not self.twice and self.stored_once == self.expected


# -- the servers -----------------------------------------------------------------------------------------


class FileApi(LocalApiProcess):
    """The local Context API keeping its threads in a SQLite file: a soak stores too much for memory, and the
    file is read back directly at the end (`SELECT ... FROM messages`)."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db

    def start(self, timeout_s: float = 30.0) -> FileApi:
        command = [sys.executable, "-m", "otel_context.local_api", "--port", "0", "--db", str(self.db)]
        env = {**os.environ, "OTEL_CONTEXT_LOCAL_API_TOKEN": self.token}
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=self.db.parent)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the local Context API did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        return self

    def __enter__(self) -> FileApi:
        return self.start()


class Redis:
    """Debian's redis-server on a free loopback port, nothing persisted (`bench.replicas.redis_server`)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Redis:
        import redis

        from .replicas import redis_server

        self._process, self.url = redis_server(self.work)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.__exit__()
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def used_mb(self) -> float:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return int(client.info("memory")["used_memory"]) / 1024 / 1024
        finally:
            client.close()

    def __exit__(self, *exc: object) -> None:
        stop_process(self._process, grace_s=10)


class SoakServe:
    """`otel-context serve` with a spool (200 once the request is fsync'd) and the Redis session book."""

    def __init__(self, api_url: str, work: Path, redis_url: str) -> None:
        self.api_url, self.work, self.redis_url = api_url, work, redis_url
        self.url = ""
        self.pid = 0
        self._process: subprocess.Popen[str] | None = None
        self._log = work / "serve.log"

    def __enter__(self) -> SoakServe:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
        env.update(
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_EXPORTER_CONTEXT_SESSION_DB=self.redis_url,
        )
        command = [sys.executable, "-m", "otel_context.cli", "serve", "--port", "0", "--grpc-port", "-1"]
        command += ["--token", SERVE_TOKEN, "--endpoint", self.api_url]
        command += ["--spool-dir", str(self.work / "spool"), "--state-dir", str(self.work / "state")]
        with self._log.open("a") as stderr:
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=self.work
            )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if "OTLP/HTTP on " not in line:
            self.__exit__()
            raise RuntimeError(f"otel-context serve did not start: {line!r} {self._log.read_text()[-2000:]}")
        self.url = line.split("OTLP/HTTP on ", 1)[1].split("/v1/traces", 1)[0]
        self.pid = self._process.pid
        return self

    def stats(self) -> dict[str, int]:
        return http_json(f"{self.url}/stats", token=SERVE_TOKEN)["counters"]

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-3000:]

    def __exit__(self, *exc: object) -> None:
        stop_process(self._process, grace_s=60)


# -- fresh OTLP bodies -----------------------------------------------------------------------------------


class Bodies:
    """OTLP/protobuf bodies of whole traces, about `SPANS_PER_REQUEST` spans each, from the captured mix.

    Whole traces, so a refused body takes no half trace with it. Every copy gets new trace and span ids,
    and every session turn a session of `OPEN_SESSIONS` open at once, each closed after
    `TURNS_PER_SESSION` turns: a session's turns arrive in different bodies, as an app's would.
    """

    def __init__(self, traces: list[list[Any]], seed: int = 1) -> None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self.templates = [encode_spans(trace) for trace in traces]
        self.sizes = [len(trace) for trace in traces]
        self.users = expected_user_messages(traces)
        self._sessions = [self._session_attributes(t) for t in self.templates]
        self._random = random.Random(seed)
        self._next = 0
        self._turn = 0
        self.expected: dict[str, int] = {}  # every trace made: its user messages

    @staticmethod
    def _session_attributes(request: Any) -> list[tuple[int, int, int, int]]:
        at = []
        for r, resource in enumerate(request.resource_spans):
            for s, scope in enumerate(resource.scope_spans):
                for p, span in enumerate(scope.spans):
                    for a, attribute in enumerate(span.attributes):
                        if attribute.key.endswith(SESSION_SUFFIXES):
                            at.append((r, s, p, a))
        return at

    def _copy(self, index: int) -> tuple[Any, str]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        trace = ExportTraceServiceRequest()
        trace.CopyFrom(self.templates[index])
        trace_id = self._random.getrandbits(128).to_bytes(16, "big")
        ids: dict[bytes, bytes] = {}
        for resource in trace.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    span.trace_id = trace_id
                    span.span_id = ids.setdefault(span.span_id, self._random.getrandbits(64).to_bytes(8, "big"))
                    if span.parent_span_id:
                        span.parent_span_id = ids.setdefault(
                            span.parent_span_id, self._random.getrandbits(64).to_bytes(8, "big")
                        )
        if self._sessions[index]:
            turn, self._turn = self._turn, self._turn + 1
            session = f"soak-{turn // (OPEN_SESSIONS * TURNS_PER_SESSION)}-{turn % OPEN_SESSIONS}"
            for r, s, p, a in self._sessions[index]:
                trace.resource_spans[r].scope_spans[s].spans[p].attributes[a].value.string_value = session
        return trace, trace_id.hex()

    def next(self) -> tuple[bytes, list[str], int]:
        """A body, the trace ids it holds (hex) and its span count."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        traces: list[str] = []
        spans = 0
        while True:
            index = self._next % len(self.templates)
            if traces and spans + self.sizes[index] > SPANS_PER_REQUEST:
                break
            self._next += 1
            trace, trace_id = self._copy(index)
            request.resource_spans.extend(trace.resource_spans)
            traces.append(trace_id)
            self.expected[trace_id] = self.users[index]
            spans += self.sizes[index]
        return request.SerializeToString(), traces, spans

    def __iter__(self) -> Iterator[tuple[bytes, list[str], int]]:
        while True:
            yield self.next()


def expected_user_messages(traces: list[list[Any]]) -> list[int]:
    """User messages each captured trace becomes (its thread, or its session turn), converted here alone."""
    from otel_context.assembly.trace_buffer import TraceBuffer
    from otel_context.spans.sdk import records_from_sdk

    out = []
    for trace in traces:
        threads = TraceBuffer().add(records_from_sdk(trace))
        out.append(sum(1 for thread in threads for message in thread.messages if message.role == "user"))
    return out


# -- 1. the sidecar soak ---------------------------------------------------------------------------------


@dataclass
class SidecarSoak:
    minutes: float
    fraction: float
    interval_s: float
    capacity_s: float
    capacity_acked_spans_s: float = 0.0  # acknowledged alone
    capacity_spans_s: float = 0.0  # acknowledged and delivered: what the soak's rate is a fraction of
    target_requests_s: float = 0.0
    spans_per_request: float = 0.0
    intervals: list[Interval] = field(default_factory=list)
    rss: RssTrack = field(default_factory=RssTrack)
    exact: Exactness | None = None
    counters: dict[str, int] = field(default_factory=dict)
    drain_s: float = 0.0
    max_lag_ms: float = 0.0  # how late the client sent a body at worst (generation and scheduling)
    redis_mb: float = 0.0


class Client:
    """The posting side: bodies out, acknowledged trace ids in."""

    def __init__(self, url: str, bodies: Bodies) -> None:
        self.url = url
        self.bodies = bodies
        self.acknowledged: set[str] = set()
        self.headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {SERVE_TOKEN}"}

    async def post(self, session: Any, body: bytes, traces: list[str], interval: Interval, since: float) -> None:
        """POST until a 200 (503s retried after their Retry-After, at most 1 s); latency from `since`."""
        import aiohttp

        for _ in range(RETRIES + 1):
            try:
                async with session.post(f"{self.url}/v1/traces", data=body, headers=self.headers) as response:
                    await response.read()
                    status, retry_after = response.status, response.headers.get("Retry-After")
            except (aiohttp.ClientError, asyncio.TimeoutError):
                interval.failed += 1
                return
            if 200 <= status < 300:
                interval.acknowledged += 1
                interval.latencies_ms.append((time.perf_counter() - since) * 1000)
                self.acknowledged.update(traces)
                return
            if status != 503:
                interval.failed += 1
                return
            interval.refused += 1
            try:
                wait = min(float(retry_after or 0.1), 1.0)
            except ValueError:
                wait = 0.1
            await asyncio.sleep(wait)
        interval.failed += 1

    async def closed_loop(self, seconds: float, concurrency: int) -> tuple[int, int]:
        """`concurrency` connections posting back to back for `seconds`: (bodies, spans) acknowledged."""
        import aiohttp

        deadline = time.perf_counter() + seconds
        tally = Interval(-1)
        spans = 0

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal spans
            while time.perf_counter() < deadline:
                body, traces, count = self.bodies.next()
                before = tally.acknowledged
                await self.post(session, body, traces, tally, time.perf_counter())
                spans += count if tally.acknowledged > before else 0

        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return tally.acknowledged, spans

    async def open_loop(
        self, serve: SoakServe, rate: float, seconds: float, interval_s: float, rss: RssTrack, say: Log
    ) -> tuple[list[Interval], float]:
        """Bodies at `rate` per second on a fixed schedule, whatever the answers; RSS sampled every second.

        Returns the intervals and the client's worst lateness (ms) against its schedule.
        """
        import aiohttp

        intervals = [Interval(i) for i in range(max(1, math.ceil(seconds / interval_s - 1e-9)))]
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        done = asyncio.Event()
        max_lag = 0.0

        async def sample() -> None:
            reported = 0
            while not done.is_set():
                now = time.perf_counter() - started
                rss.samples.append((now, tree_rss_mb(serve.pid)))
                index = min(int(now // interval_s), len(intervals) - 1)
                if index > reported or now >= seconds:  # an interval ended: its backlog, a line on stderr
                    ended = intervals[reported]
                    with contextlib.suppress(OSError):
                        ended.backlog = (await asyncio.to_thread(serve.stats))["threads_queued"]
                    say(
                        f"  sidecar minute {reported + 1}: {ended.sent} sent, {ended.acknowledged} acknowledged, "
                        f"{ended.refused} refused, p50 {num(ended.p(50))} ms, p99 {num(ended.p(99))} ms, "
                        f"RSS {rss.samples[-1][1]:.0f} MB, backlog {ended.backlog}"
                    )
                    reported += 1
                    if reported >= len(intervals):
                        return
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            number = 0
            while True:
                due = number / rate
                if due >= seconds:
                    break
                body, traces, _ = self.bodies.next()  # made before its time comes: about 1 ms of CPU
                delay = started + due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                max_lag = max(max_lag, -delay)
                interval = intervals[min(int(due // interval_s), len(intervals) - 1)]
                interval.sent += 1
                task = asyncio.create_task(self.post(session, body, traces, interval, started + due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                number += 1
            if tasks:
                await asyncio.gather(*tasks)
        await sampler
        done.set()
        return intervals, max_lag * 1000


def soak_sidecar(
    minutes: float, fraction: float, interval_s: float, capacity_s: float, say: Log = log, traces: Any = None
) -> SidecarSoak:
    """`traces`: the captured mix (`SpanMix.traces`) when this process captured it already (it can only once)."""
    from .apps import capture_mix

    result = SidecarSoak(minutes, fraction, interval_s, capacity_s)
    bodies = Bodies(traces if traces is not None else capture_mix())
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        work = Path(tmp)
        with Redis(work) as redis, FileApi(work / "api.db") as api, SoakServe(api.url, work, redis.url) as serve:
            client = Client(serve.url, bodies)
            say(f"sidecar soak: serve at {serve.url} (spool, Redis sessions {redis.url}), local API {api.url}")
            asyncio.run(client.closed_loop(1.0, 1))  # warm-up: imports, connections, first sessions
            wait_delivered(serve, len(client.acknowledged), STALL_S)
            started = time.perf_counter()
            acked, spans = asyncio.run(client.closed_loop(capacity_s, CAPACITY_CONCURRENCY))
            acked_s = time.perf_counter() - started
            wait_delivered(serve, len(client.acknowledged), STALL_S)
            delivered_s = time.perf_counter() - started
            result.capacity_acked_spans_s = spans / acked_s
            result.capacity_spans_s = spans / delivered_s
            result.spans_per_request = spans / acked if acked else SPANS_PER_REQUEST
            result.target_requests_s = fraction * result.capacity_spans_s / result.spans_per_request
            say(
                f"  capacity: {acked} requests ({spans:,} spans) acknowledged in {acked_s:.1f} s "
                f"({result.capacity_acked_spans_s:,.0f} spans/s), delivered in {delivered_s:.1f} s "
                f"({result.capacity_spans_s:,.0f} spans/s); soak at {fraction:.0%}: "
                f"{result.target_requests_s:.1f} requests/s for {minutes:g} min"
            )
            seconds = minutes * 60
            result.rss.duration_s = seconds
            result.intervals, result.max_lag_ms = asyncio.run(
                client.open_loop(serve, result.target_requests_s, seconds, interval_s, result.rss, say)
            )
            result.rss.fill(result.intervals, interval_s)
            drained = time.perf_counter()
            result.counters = wait_delivered(serve, len(client.acknowledged), STALL_S)
            result.drain_s = time.perf_counter() - drained
            result.redis_mb = redis.used_mb()
            say(f"  delivered {result.drain_s:.1f} s after the last request; checking the stored messages")
        expected = {trace: bodies.expected[trace] for trace in client.acknowledged}
        result.exact = check_traces(work / "api.db", expected, set(bodies.expected))
    return result


def check_traces(db: Path, expected: dict[str, int], sent: set[str]) -> Exactness:
    """Every acknowledged trace's user messages stored exactly as many times as converting it gives."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT json_extract(body, '$.metadata.trace_id'), COUNT(*) FROM messages"
            " WHERE json_extract(body, '$.role') = 'user' GROUP BY 1"
        ).fetchall()
        threads, messages = connection.execute(
            "SELECT COUNT(*), COALESCE(SUM(message_count), 0) FROM threads"
        ).fetchone()
    connection.close()
    stored = dict(rows)
    exact = Exactness(len(expected), 0, threads=threads, messages=messages)
    for trace, users in expected.items():
        got = stored.get(trace, 0)
        if got == users:
            exact.stored_once += 1
        elif got < users:
            exact.missing.append(trace)
        else:
            exact.twice.append(trace)
    for trace in stored:
        if trace not in expected:
            if trace in sent:
                exact.unacknowledged += 1
            else:
                exact.twice.append(f"{trace} (never sent)")
    return exact


# -- 2. the in-process soak ------------------------------------------------------------------------------


def app_worker(url: str, seconds: float, fraction: float, interval_s: float, calibrate_s: float) -> int:
    """In the child: instrumented LangChain calls, paced; one JSON line per interval and one at the end."""
    import gc

    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_context import ContextSpanExporter

    from .memory import proc_status_kib

    exporter = ContextSpanExporter(endpoint=url, token=TOKEN)
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-soak-app"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    LangchainInstrumentor().instrument(tracer_provider=provider)
    prompt = ChatPromptTemplate.from_messages([("system", "You answer questions about orders."), ("human", "{q}")])
    turn_chain = prompt | FakeListChatModel(responses=["Your order ships tomorrow."]) | StrOutputParser()
    chat = FakeListChatModel(responses=["J'adore la programmation."])
    system = SystemMessage("You are a helpful assistant that translates English to French.")

    def session_of(n: int) -> tuple[str, int] | None:
        """Call `n`'s session and turn: three session turns (sessions of `TURNS_PER_SESSION`, `OPEN_SESSIONS`
        open) to one standalone chat (None)."""
        if n % 4 == 3:
            return None
        turn = n - n // 4 - 1
        return f"app-{turn // (OPEN_SESSIONS * TURNS_PER_SESSION)}-{turn % OPEN_SESSIONS}", turn

    def call(n: int) -> None:
        found = session_of(n)
        if found is None:
            chat.invoke([system, HumanMessage(f"I love programming [call {n}].")])
            return
        session, turn = found
        metadata = {"session_id": session, "user_id": f"u-{turn % 7}"}
        turn_chain.invoke({"q": f"Where is order {n}? [call {n}]"}, config={"metadata": metadata})

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < calibrate_s:  # closed loop: the app's own call rate
        call(n)
        n += 1
    capacity = n / (time.perf_counter() - started)
    rate = fraction * capacity
    provider.force_flush()
    exporter.force_flush(120_000)
    gc.collect()
    emit({"capacity_calls_s": capacity, "rate": rate, "calibration_calls": n})
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - started, proc_status_kib("VmRSS") / 1024))
            stop.wait(1.0)

    intervals = max(1, math.ceil(seconds / interval_s - 1e-9))
    # 8 bytes a call, not a float object's 32: the harness's own data is in the RSS it measures
    latencies = [array("d") for _ in range(intervals)]
    max_lag = 0.0
    started = time.perf_counter()
    watcher = threading.Thread(target=sampler, name="rss-sampler", daemon=True)
    watcher.start()
    reported = 0
    number = 0
    while True:
        due = number / rate
        if due >= seconds:
            break
        delay = started + due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        max_lag = max(max_lag, -delay)
        index = min(int(due // interval_s), intervals - 1)
        while reported < index:  # an interval ended
            emit({"interval": reported, "calls": len(latencies[reported]), "rss_mb": samples[-1][1] if samples else 0})
            reported += 1
        before = time.perf_counter()
        call(n)
        latencies[index].append((time.perf_counter() - before) * 1000)
        n += 1
        number += 1
    stop.set()
    watcher.join()
    for index in range(reported, intervals):
        emit({"interval": index, "calls": len(latencies[index]), "rss_mb": samples[-1][1] if samples else 0})
    provider.force_flush()
    exporter.force_flush(300_000)
    stats = exporter.stats()
    provider.shutdown()
    emit(
        {
            "done": True,
            "calls": n,
            "sessions": len({found[0] for found in map(session_of, range(n)) if found is not None}),
            "latencies_ms": [list(values) for values in latencies],
            "rss": samples,
            "max_lag_ms": max_lag * 1000,
            "stats": {key: value for key, value in stats.items() if isinstance(value, int)},
        }
    )
    return 0


@dataclass
class AppSoak:
    minutes: float
    fraction: float
    interval_s: float
    capacity_calls_s: float = 0.0
    rate: float = 0.0
    calls: int = 0  # every call, those of the capacity run included
    calibration_calls: int = 0
    sessions: int = 0
    intervals: list[Interval] = field(default_factory=list)
    rss: RssTrack = field(default_factory=RssTrack)
    exact: Exactness | None = None
    stats: dict[str, int] = field(default_factory=dict)
    max_lag_ms: float = 0.0


def soak_app(minutes: float, fraction: float, interval_s: float, calibrate_s: float, say: Log = log) -> AppSoak:
    result = AppSoak(minutes, fraction, interval_s)
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-soak-app-") as tmp:
        work = Path(tmp)
        with FileApi(work / "api.db") as api:
            say(f"app soak: an instrumented LangChain app exporting in process to {api.url}")
            command = [sys.executable, "-m", "bench.soak", "--app-worker", api.url, "--minutes", str(minutes)]
            command += ["--rate-fraction", str(fraction), "--interval-s", str(interval_s)]
            command += ["--capacity-s", str(calibrate_s)]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
            env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
            worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
            assert worker.stdout is not None
            final: dict[str, Any] = {}
            try:
                for line in worker.stdout:
                    record = json.loads(line)
                    if "capacity_calls_s" in record:
                        result.capacity_calls_s, result.rate = record["capacity_calls_s"], record["rate"]
                        result.calibration_calls = record["calibration_calls"]
                        say(
                            f"  capacity: {result.capacity_calls_s:,.0f} calls/s; soak at {fraction:.0%}: "
                            f"{result.rate:,.1f} calls/s for {minutes:g} min"
                        )
                    elif "interval" in record:
                        say(
                            f"  app minute {record['interval'] + 1}: {record['calls']} calls, "
                            f"RSS {record['rss_mb']:.0f} MB"
                        )
                    elif record.get("done"):
                        final = record
            finally:
                worker.stdout.close()
                if worker.wait(600) != 0:
                    raise RuntimeError(f"the app worker failed (exit {worker.returncode})")
        result.calls, result.sessions, result.stats = final["calls"], final["sessions"], final["stats"]
        result.max_lag_ms = final["max_lag_ms"]
        result.intervals = [
            Interval(i, sent=len(ms), acknowledged=len(ms), latencies_ms=ms)
            for i, ms in enumerate(final["latencies_ms"])
        ]
        result.rss = RssTrack([(t, mb) for t, mb in final["rss"]], seconds)
        result.rss.fill(result.intervals, interval_s)
        result.exact = check_calls(work / "api.db", result.calls)
    return result


def check_calls(db: Path, calls: int) -> Exactness:
    """Every call's numbered question stored exactly once, as a user message."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        texts = connection.execute(
            "SELECT json_extract(body, '$.message') FROM messages WHERE json_extract(body, '$.role') = 'user'"
        ).fetchall()
        threads, messages = connection.execute(
            "SELECT COUNT(*), COALESCE(SUM(message_count), 0) FROM threads"
        ).fetchone()
    connection.close()
    seen = Counter(int(m.group(1)) for (text,) in texts if (m := CALL_MARK.search(text or "")))
    exact = Exactness(calls, 0, threads=threads, messages=messages)
    for n in range(calls):
        got = seen.get(n, 0)
        if got == 1:
            exact.stored_once += 1
        elif got == 0:
            exact.missing.append(f"call {n}")
        else:
            exact.twice.append(f"call {n}")
    exact.twice += [f"call {n} (never made)" for n in seen if n >= calls]
    return exact


# -- the report ------------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def rss_line(rss: RssTrack) -> str:
    return (
        f"RSS flat within {RSS_GOAL:.0%} after the warm-up (first {rss.warmup_s:,.0f} s): "
        f"{num(rss.baseline_mb)} MB at its end, at most {num(rss.peak_after_mb)} MB after "
        f"({pct_text(rss.growth)}): {verdict(rss.flat)}"
    )


def pct_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:+.1f} %"


def exact_line(exact: Exactness | None, what: str) -> str:
    if exact is None:
        return f"{what}: not checked"
    detail = f"{exact.stored_once:,} of {exact.expected:,} stored once"
    if exact.missing:
        detail += f", {len(exact.missing):,} missing (e.g. {', '.join(exact.missing[:3])})"
    if exact.twice:
        detail += f", {len(exact.twice):,} stored more than once (e.g. {', '.join(exact.twice[:3])})"
    return f"{what}: {detail}: {verdict(exact.met)}"


def minute_label(index: int, interval_s: float) -> str:
    return str(index + 1) if interval_s == 60 else f"{index * interval_s:g}–{(index + 1) * interval_s:g} s"


def sidecar_section(run: SidecarSoak) -> str:
    rows = [
        (
            minute_label(i.index, run.interval_s),
            num(i.rss_mb),
            num(i.rss_max_mb),
            i.sent,
            i.acknowledged,
            i.refused,
            i.failed,
            num(i.p(50)),
            num(i.p(99)),
            i.backlog,
        )
        for i in run.intervals
    ]
    every = [ms for i in run.intervals for ms in i.latencies_ms]
    exact = run.exact
    counters = run.counters
    return "\n".join(
        [
            "## Sidecar soak: `otel-context serve --spool-dir`, Redis sessions",
            "",
            f"Capacity, measured first ({run.capacity_s:g} s closed loop, {CAPACITY_CONCURRENCY} connections): "
            f"{num(run.capacity_acked_spans_s, 0)} spans/s acknowledged, {num(run.capacity_spans_s, 0)} spans/s "
            f"acknowledged and delivered. Soak: {run.fraction:.0%} of the latter, "
            f"{run.target_requests_s:.1f} requests/s of {run.spans_per_request:.0f} spans (whole traces of the "
            f"realistic mix, fresh ids, session turns over {OPEN_SESSIONS} open sessions of {TURNS_PER_SESSION} "
            f"turns), open loop for {run.minutes:g} min; 503s retried (at most {RETRIES} times). Latency: from "
            f"the scheduled send to the 200 (the client was at worst {num(run.max_lag_ms)} ms late); RSS: the "
            "serve process and its children, sampled every second; backlog: `threads_queued` (the spool).",
            "",
            table(
                (
                    "minute",
                    "RSS MB (end)",
                    "RSS MB (max)",
                    "sent",
                    "acknowledged",
                    "503s",
                    "given up",
                    "ack p50 ms",
                    "ack p99 ms",
                    "backlog",
                ),
                rows,
            ),
            "",
            f"Whole run: ack p50 {num(percentile(every, 50))} ms, p99 {num(percentile(every, 99))} ms over "
            f"{len(every):,} requests. Delivered {run.drain_s:.1f} s after the last request; sidecar counters: "
            f"threads_converted={counters.get('threads_converted')}, threads_uploaded="
            f"{counters.get('threads_uploaded')}, threads_retried={counters.get('threads_retried')}, "
            f"threads_dropped={counters.get('threads_dropped')}. The API holds {exact.threads if exact else 0:,} "
            f"threads, {exact.messages if exact else 0:,} messages; Redis used {run.redis_mb:.1f} MB"
            + (f"; {exact.unacknowledged} traces stored whose 200 the client never saw" if exact else "")
            + ".",
            "",
            f"- {rss_line(run.rss)}",
            f"- {exact_line(exact, 'every acknowledged trace delivered once (its user messages, by trace_id)')}",
        ]
    )


def app_section(run: AppSoak) -> str:
    rows = [
        (
            minute_label(i.index, run.interval_s),
            num(i.rss_mb),
            num(i.rss_max_mb),
            i.sent,
            num(i.p(50), 2),
            num(i.p(99), 2),
        )
        for i in run.intervals
    ]
    every = [ms for i in run.intervals for ms in i.latencies_ms]
    stats = run.stats
    return "\n".join(
        [
            "## In-process soak: an app with `BatchSpanProcessor(ContextSpanExporter)`",
            "",
            f"A child process, OpenLLMetry's LangChain instrumentation, LCEL chains on fake chat models: three "
            f"session turns (sessions of {TURNS_PER_SESSION} turns, {OPEN_SESSIONS} open) to one standalone chat. "
            f"Its call rate, measured first (closed loop): {num(run.capacity_calls_s, 0)} calls/s; the soak "
            f"paces {run.fraction:.0%} of it, {num(run.rate)} calls/s, for {run.minutes:g} min (at worst "
            f"{num(run.max_lag_ms)} ms behind schedule). Latency: each `invoke()`, on the app's thread.",
            "",
            table(("minute", "RSS MB (end)", "RSS MB (max)", "calls", "call p50 ms", "call p99 ms"), rows),
            "",
            f"Whole run: {run.calls - run.calibration_calls:,} calls paced (and {run.calibration_calls:,} in the "
            f"capacity run before) over {run.sessions:,} sessions, call p50 {num(percentile(every, 50), 2)} "
            f"ms, p99 {num(percentile(every, 99), 2)} ms. Exporter: threads_converted="
            f"{stats.get('threads_converted')}, threads_uploaded={stats.get('threads_uploaded')}, "
            f"threads_retried={stats.get('threads_retried')}, threads_dropped={stats.get('threads_dropped')}; "
            f"the API holds {run.exact.threads if run.exact else 0:,} threads.",
            "",
            f"- {rss_line(run.rss)}",
            f"- {exact_line(run.exact, 'every call stored once (its numbered question)')}",
        ]
    )


def render(sidecar: SidecarSoak | None, app: AppSoak | None, command: str, took_s: float) -> str:
    facts = machine.describe()
    minutes = max(run.minutes for run in (sidecar, app) if run is not None)
    short = " A short run (under 10 minutes): it checks the plumbing, not the soak." if minutes < 10 else ""
    out = ["# otel-context soak", "", f"`{command}` took {took_s:,.0f} s; loopback only.{short}", "", "## Machine", ""]
    out += [f"- **{key}**: {value}" for key, value in facts.items()]
    rows = []
    for name, run in (("sidecar", sidecar), ("app, in process", app)):
        if run is None:
            continue
        rows.append(
            (f"{name}: RSS flat within {RSS_GOAL:.0%} after warm-up", pct_text(run.rss.growth), verdict(run.rss.flat))
        )
        exact = run.exact
        met = exact is not None and exact.met
        value = f"{exact.stored_once:,} / {exact.expected:,}" if exact else "n/a"
        what = "every acknowledged trace delivered once" if run is sidecar else "every call stored once"
        rows.append((f"{name}: {what}", value, verdict(met)))
    out += ["", "## Verdicts", "", table(("goal", "measured", ""), rows, "lrl"), ""]
    if sidecar is not None:
        out += [sidecar_section(sidecar), ""]
    if app is not None:
        out += [app_section(app), ""]
    return "\n".join(out)


def section(sidecar: SidecarSoak | None, app: AppSoak | None) -> Section:
    """Benchmark 10 of `python -m bench`: both soaks, their tables demoted a heading level, and their goals."""
    parts, targets = [], []
    for name, run in (("sidecar", sidecar), ("app, in process", app)):
        if run is None:
            continue
        text = sidecar_section(run) if isinstance(run, SidecarSoak) else app_section(run)  # type: ignore[arg-type]
        parts.append(text.replace("## ", "### ", 1))
        targets.append(
            Target(f"{name} soak: RSS flat after warm-up", pct_text(run.rss.growth), f"≤ {RSS_GOAL:.0%}", run.rss.flat)
        )
        exact = run.exact
        value = f"{exact.stored_once:,} / {exact.expected:,}" if exact else "n/a"
        what = "acknowledged traces" if run is sidecar else "calls"
        targets.append(Target(f"{name} soak: {what} stored once", value, "all", exact is not None and exact.met))
    return Section(SOAK, "\n\n".join(parts), targets)


def passed(sidecar: SidecarSoak | None, app: AppSoak | None) -> bool:
    runs = [run for run in (sidecar, app) if run is not None]
    return all(run.rss.flat and run.exact is not None and run.exact.met for run in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each soak (default 10)")
    parser.add_argument("--rate-fraction", type=float, default=0.7, help="of the measured capacity (default 0.7)")
    parser.add_argument("--only", default="sidecar,app", help="sidecar, app or both (default)")
    parser.add_argument("--interval-s", type=float, default=60.0, help="one table row per this many s (default 60)")
    parser.add_argument("--capacity-s", type=float, default=25.0, help="closed-loop capacity run, s (default 25)")
    parser.add_argument("--write", action="store_true", help="also write bench/results-soak.md (or --out)")
    parser.add_argument("--out", type=Path, default=HERE / "results-soak.md", help=argparse.SUPPRESS)
    parser.add_argument("--app-worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.app_worker:
        return app_worker(args.app_worker, args.minutes * 60, args.rate_fraction, args.interval_s, args.capacity_s)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if not only or only - {"sidecar", "app"}:
        raise SystemExit("--only takes sidecar, app or sidecar,app")
    started = time.perf_counter()
    sidecar = app = None
    if "sidecar" in only:
        sidecar = soak_sidecar(args.minutes, args.rate_fraction, args.interval_s, args.capacity_s)
    if "app" in only:
        app = soak_app(args.minutes, args.rate_fraction, args.interval_s, min(args.capacity_s, 10.0))
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(sidecar, app, command.strip(), time.perf_counter() - started)
    print(text)
    if args.write:
        args.out.write_text(text, encoding="utf-8")
        log(f"wrote {args.out}")
    return 0 if passed(sidecar, app) else 1


if __name__ == "__main__":
    sys.exit(main())
