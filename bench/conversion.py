"""Benchmark 2: spans/s through the conversion core against the OTLP protobuf encoder, same spans.

Our path is what `ContextSpanExporter.export()` does before queueing: `records_from_sdk(spans)` then
`TraceBuffer.add(...)`, which assembles traces and converts the finished roots into threads. The
reference is the OTLP exporter's encoding of the same batch. Both run alternately, in rounds.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.delivery.item import encode_thread
from otel_context.spans.sdk import records_from_sdk

from .apps import SpanMix
from .report import CONVERSION, Section, Target, num, table
from .stats import median

RATIO_GOAL = 1.0
Batches = Sequence[Sequence[ReadableSpan]]


def ours(batches: Batches) -> int:
    """records_from_sdk + TraceBuffer.add over every batch; the number of threads built."""
    buffer = TraceBuffer()
    threads = 0
    for batch in batches:
        threads += len(buffer.add(records_from_sdk(batch)))
    return threads


def ours_with_bodies(batches: Batches) -> int:
    """Our path plus the JSON upload body of each thread (what the delivery queue does on submit)."""
    buffer = TraceBuffer()
    size = 0
    for batch in batches:
        for thread in buffer.add(records_from_sdk(batch)):
            size += len(encode_thread(thread))
    return size


def otlp(batches: Batches) -> int:
    """The OTLP exporter's encoding of the same batches; bytes produced."""
    return sum(len(encode_spans(batch).SerializeToString()) for batch in batches)


def time_once(fn: Callable[[Batches], int], batches: Batches) -> float:
    gc.collect()
    started = time.perf_counter_ns()
    fn(batches)
    return (time.perf_counter_ns() - started) / 1e9


@dataclass
class ConversionRun:
    spans: int
    traces: int
    threads: int
    batch_size: int
    repeats: int
    mix: str
    rates: dict[str, list[float]]

    def rate(self, name: str) -> float:
        return median(self.rates[name])


PATHS: dict[str, Callable[[Batches], int]] = {
    "otel-context (records_from_sdk + TraceBuffer.add)": ours,
    "otel-context + JSON upload bodies (encode_thread)": ours_with_bodies,
    "OTLP protobuf (encode_spans().SerializeToString())": otlp,
}
OURS, OURS_BODIES, REFERENCE = PATHS


def run(mix: SpanMix, *, total_spans: int, repeats: int, batch_size: int = 512) -> ConversionRun:
    batches = mix.span_batches(total_spans, batch_size)
    spans = sum(len(b) for b in batches)
    traces = len({s.context.trace_id for b in batches for s in b if s.context is not None})
    threads = ours(batches)  # also a warm-up of our path
    otlp(batches[:4])
    rates: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(repeats):
        for name, fn in PATHS.items():
            rates[name].append(spans / time_once(fn, batches))
    return ConversionRun(spans, traces, threads, batch_size, repeats, mix.describe(), rates)


def section(run: ConversionRun) -> Section:
    reference = run.rate(REFERENCE)
    rows = [
        (
            name,
            num(run.rate(name), 0),
            num(min(run.rates[name]), 0),
            num(max(run.rates[name]), 0),
            f"{run.rate(name) / reference:.2f}",
        )
        for name in PATHS
    ]
    value = run.rate(OURS) / reference
    body = "\n".join(
        [
            f"{run.spans:,} spans ({run.traces:,} traces → {run.threads:,} threads) in batches of {run.batch_size} "
            f"(the `BatchSpanProcessor` default), real SDK spans captured once from the instrumentation "
            f"({run.mix}: standalone chat calls, 4-step chains, nested chains) and replayed with fresh trace "
            f"ids; {run.repeats} alternating repeats, one process, single thread.",
            "",
            table(("path", "median spans/s", "min", "max", "× OTLP"), rows),
            "",
            f"Ratio otel-context / OTLP encoder: **{value:.2f}** (target ≥ {RATIO_GOAL:g}).",
        ]
    )
    target = Target(
        "conversion spans/s ÷ OTLP protobuf encoder", f"{value:.2f}", f"≥ {RATIO_GOAL:g}", value >= RATIO_GOAL
    )
    return Section(CONVERSION, body, [target])
