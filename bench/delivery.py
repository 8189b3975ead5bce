"""Benchmark 5: threads/s delivered to the local Context API (own process) through the exporter's
delivery queue, retries on (the defaults), at each API latency; and what exactly-once costs when answers
are lost: read-backs per 1,000 uploads, and messages stored twice (none, or the bench says so).

K threads converted from the realistic mix are submitted at once to `ContextSpanExporter`'s
`DeliveryQueue`; the clock stops when nothing is left queued or in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from otel_context import ContextSpanExporter
from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.model import ConversationThread

from .apps import SpanMix
from .report import DELIVERY, Section, num, table
from .services import TOKEN, LocalApiProcess


@dataclass
class DeliveryRun:
    latency_s: float
    threads: int
    seconds: float
    uploaded: int
    retried: int
    dropped: int
    stored: int
    concurrency: int

    @property
    def rate(self) -> float:
        return self.uploaded / self.seconds


def make_threads(mix: SpanMix, count: int) -> list[ConversationThread]:
    buffer = TraceBuffer()
    threads: list[ConversationThread] = []
    for trace in mix.record_traces(count):
        threads.extend(buffer.add(trace))
    return threads


def run_once(api: LocalApiProcess, threads: list[ConversationThread], latency_s: float) -> DeliveryRun:
    api.set_latency(latency_s)
    exporter = ContextSpanExporter(endpoint=api.url, token=TOKEN, register_metrics=False)
    before = api.threads()
    try:
        exporter.delivery.submit(threads[:4])  # warm-up: workers started, connections open
        exporter.force_flush(60_000)
        warm = exporter.stats()["threads_uploaded"]
        rest = threads[4:]
        started = time.perf_counter()
        exporter.delivery.submit(rest)
        deadline = started + 600
        while exporter.delivery.pending() and time.perf_counter() < deadline:  # queued or in flight
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        if exporter.delivery.pending():
            raise RuntimeError(f"delivery did not finish in 600 s: {exporter.stats()}")
    finally:
        exporter.shutdown(60_000)
        api.set_latency(0)
    stats = exporter.stats()
    return DeliveryRun(
        latency_s,
        len(rest),
        seconds,
        stats["threads_uploaded"] - warm,
        stats["threads_retried"],
        stats["threads_dropped"],
        api.threads() - before,
        exporter.settings.concurrency,
    )


# Faults that leave an upload's outcome unknown, each for the first seconds of a run (the local API's plan).
AMBIGUOUS = (
    ("stored, answer lost (reset)", {"lose_ack_s": 1.0}),
    ("stored, then 502", {"stored_status": 502, "duration_s": 1.0}),
    ("reset before the write", {"reset_s": 1.0}),
)


@dataclass
class FaultRun:
    fault: str
    threads: int
    uploaded: int
    readbacks: int
    found: int
    unconfirmed: int
    posts: int
    extra_messages: int  # messages stored beyond what was sent once: duplicates

    @property
    def per_thousand(self) -> float:
        return 1000 * self.readbacks / max(1, self.uploaded)


def run_fault(api: LocalApiProcess, threads: list[ConversationThread], name: str, fault: dict) -> FaultRun:
    """Submit `threads` while `fault` lasts; count read-backs, and messages stored beyond one copy each."""
    exporter = ContextSpanExporter(
        endpoint=api.url, token=TOKEN, register_metrics=False, retry_initial_s=0.2, retry_max_s=1.0
    )
    before = api.admin_stats()
    try:
        api.set_faults(**fault)
        exporter.delivery.submit(threads)
        deadline = time.perf_counter() + 600
        while exporter.delivery.pending() and time.perf_counter() < deadline:
            time.sleep(0.01)
    finally:
        exporter.shutdown(60_000)
        api.set_faults()
    after = api.admin_stats()
    stats = exporter.stats()
    route = "POST /api/v1/log/conversation/thread"
    posts = after["requests"].get(route, 0) - before["requests"].get(route, 0)  # type: ignore[union-attr]
    sent = sum(len(t.messages) for t in threads)
    return FaultRun(
        name,
        len(threads),
        stats["threads_uploaded"],
        stats["readbacks"],
        stats["readbacks_found"],
        stats["threads_unconfirmed"],
        posts,
        int(after["messages"]) - int(before["messages"]) - sent,  # type: ignore[call-overload]
    )


def run_faults(api: LocalApiProcess, mix: SpanMix, count: int, log: Callable[[str], None] = print) -> list[FaultRun]:
    runs = []
    for name, fault in AMBIGUOUS:
        done = run_fault(api, make_threads(mix, count), name, fault)
        log(f"  {name}: {done.readbacks} read-backs for {done.uploaded} uploads, {done.extra_messages} extra messages")
        runs.append(done)
    return runs


def run(
    api: LocalApiProcess, mix: SpanMix, plan: list[tuple[float, int]], log: Callable[[str], None] = print
) -> list[DeliveryRun]:
    """`plan`: (API latency in s, threads) pairs."""
    runs = []
    for latency, count in plan:
        done = run_once(api, make_threads(mix, count + 4), latency)
        log(f"  delivery at +{latency * 1000:g} ms: {done.uploaded} threads in {done.seconds:.2f} s")
        runs.append(done)
    return runs


def section(runs: list[DeliveryRun], faults: list[FaultRun] = ()) -> Section:  # type: ignore[assignment]
    rows = [
        (
            f"+{r.latency_s * 1000:g} ms",
            f"{r.threads:,}",
            num(r.seconds, 2),
            num(r.rate, 0),
            num(r.concurrency / r.latency_s, 0) if r.latency_s else "—",
            f"{r.uploaded:,}",
            f"{r.stored:,}",
            f"{r.retried:,}",
            f"{r.dropped:,}",
        )
        for r in runs
    ]
    header = ("API latency", "threads", "seconds", "threads/s", "latency bound (workers / latency)", "uploaded")
    header += ("stored by the API", "retried", "dropped")
    body = "\n".join(
        [
            "Threads converted from the realistic mix, submitted at once to `ContextSpanExporter`'s delivery queue "
            "(default settings: 4 upload workers, retries on), delivered over HTTP to the local Context API in its "
            "own process; the clock stops when nothing is left queued or in flight.",
            "",
            table(header, rows),
        ]
    )
    if faults:
        fault_rows = [
            (f.fault, f"{f.threads:,}", f"{f.uploaded:,}", f"{f.posts:,}", f"{f.readbacks:,}", num(f.per_thousand, 0),
             f"{f.found:,}", f"{f.unconfirmed:,}", f"{f.extra_messages:,}")
            for f in faults
        ]  # fmt: skip
        fault_header = ("fault (first second)", "threads", "uploaded", "POSTs", "read-backs", "per 1,000 uploads")
        fault_header += ("found stored", "unconfirmed", "messages stored twice")
        body += (
            "\n\nExactly once when answers are lost: the same threads submitted while the local API (which appends, "
            "as Context does) loses answers for the first second. Read-backs are the price; messages stored twice "
            "must be 0.\n\n" + table(fault_header, fault_rows)
        )
    return Section(DELIVERY, body)
