"""Benchmark 7: what `provider.force_flush()` after every call costs (the serverless shape), per call.

One process of its own (`python -m bench.flush`, started by `run`), one instrumented company-name chain, two
set-ups side by side, alternating in rounds:
the standard OTLP exporter (HTTP protobuf, to a local sink) and `ContextSpanExporter` (to the local
API, each flush waiting until the thread is delivered). For each: the wall time per call of N calls
of `invoke()` then one flush at the end, and of N calls of `invoke()` + `provider.force_flush()`
(median over rounds); the flush's cost per call is the difference: waiting for the upload instead
of overlapping it with the next call. Its own process, because the bench's process instrumented LangChain
before (the mix's capture), and the handler that instrumentation leaves behind would end a second set of
spans per call on a provider long shut down: CPU and a warning per span in both set-ups.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_context import ContextSpanExporter

from .apps import company_chain
from .report import FLUSH, Section, num, table
from .services import TOKEN, LocalApiProcess, OtlpSink

SETUPS = ("otlp", "context")


class _Current(SpanProcessor):
    """The instrumentation is set up once per process; each set-up plugs its own processor in here."""

    def __init__(self) -> None:
        self.target: BatchSpanProcessor | None = None

    def on_start(self, span, parent_context=None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span) -> None:
        if self.target is not None:
            self.target.on_end(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.target.force_flush(timeout_millis) if self.target is not None else True


@dataclass
class FlushRun:
    invoke_us: dict[str, float]
    with_flush_us: dict[str, float]

    def flush_us(self, setup: str) -> float:
        return self.with_flush_us[setup] - self.invoke_us[setup]


def run(api: LocalApiProcess, sink: OtlpSink, *, n: int, rounds: int, log: Callable[[str], None]) -> FlushRun:
    """The measurement in a child process (see the module docstring); its progress lines go to stderr."""
    log(f"   in a process of its own: {n} calls per set-up and round, {rounds} round(s)")
    out = subprocess.run(
        [sys.executable, "-m", "bench.flush", api.url, sink.url, str(n), str(rounds)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return FlushRun(result["invoke_us"], result["with_flush_us"])


def measure(api_url: str, sink_url: str, *, n: int, rounds: int, log: Callable[[str], None]) -> FlushRun:
    current = _Current()
    provider = TracerProvider()
    provider.add_span_processor(current)
    instrumentor = LangchainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    chain = company_chain()
    samples: dict[tuple[str, bool], list[float]] = {(s, f): [] for s in SETUPS for f in (False, True)}
    try:
        for round_ in range(rounds):
            for setup in SETUPS:
                exporter: SpanExporter = (
                    OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces")
                    if setup == "otlp"
                    else ContextSpanExporter(endpoint=api_url, token=TOKEN, register_metrics=False)
                )
                current.target = BatchSpanProcessor(exporter)
                for _ in range(20):  # warm-up: connections open, caches filled
                    chain.invoke({"product": "socks"})
                    provider.force_flush()
                for flush in (False, True):
                    started = time.perf_counter()
                    for _ in range(n):
                        chain.invoke({"product": "socks"})
                        if flush:
                            provider.force_flush()
                    provider.force_flush()  # the same work done in both: every thread delivered
                    samples[(setup, flush)].append((time.perf_counter() - started) / n)
                current.target.shutdown()
                current.target = None
            log(f"   round {round_ + 1}/{rounds} done")
    finally:
        instrumentor.uninstrument()
    median = {key: statistics.median(values) * 1e6 for key, values in samples.items()}
    return FlushRun({s: median[(s, False)] for s in SETUPS}, {s: median[(s, True)] for s in SETUPS})


def section(result: FlushRun) -> Section:
    rows = [
        (name, num(result.invoke_us[setup], 0), num(result.with_flush_us[setup], 0), num(result.flush_us(setup), 0))
        for setup, name in (("otlp", "standard `OTLPSpanExporter`"), ("context", "`ContextSpanExporter`"))
    ]
    body = (
        "Wall time per call, µs (median of rounds), one process, set-ups alternating; the local API and the OTLP "
        "sink answer at once. With otel-context each flush returns only once the call's thread is stored in the "
        "(local) Context API; the OTLP exporter's once its request is answered.\n\n"
        + table(["set-up", "`invoke()`, flush at the end", "`invoke()` + `force_flush()`", "flush per call"], rows)
    )
    return Section(FLUSH, body)


def main(argv: list[str]) -> int:
    """`python -m bench.flush API_URL SINK_URL N ROUNDS`: one JSON line of the medians (what `run` reads)."""
    api_url, sink_url, n, rounds = argv[0], argv[1], int(argv[2]), int(argv[3])
    result = measure(api_url, sink_url, n=n, rounds=rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps({"invoke_us": result.invoke_us, "with_flush_us": result.with_flush_us}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
