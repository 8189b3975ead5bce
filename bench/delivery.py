"""Benchmark 5: threads/s delivered to the local Context API (own process) through the exporter's
delivery queue, retries on (the defaults), at each API latency.

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


def section(runs: list[DeliveryRun]) -> Section:
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
    return Section(DELIVERY, body)
