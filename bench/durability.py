"""Benchmark 6: what durable acknowledgement costs the sidecar, side by side in one run.

`otel-context serve` without a spool (answers once the spans are in memory) against `--spool-dir`
(answers once the request is fsync'd in its write-ahead log, and spools every thread). The same
OTLP/HTTP bodies go to a fresh process of each kind, rounds alternating, from a client with
`CONCURRENCY` connections, as a Collector's sending queue has several consumers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from .apps import SpanMix
from .report import DURABILITY, Section, Target, num, table
from .services import LocalApiProcess
from .sidecar import SPANS_PER_REQUEST, WARMUP, ServeProcess, _roots, post_all, wait_delivered
from .stats import median

CONCURRENCY = 8
RATIO_GOAL = 0.7
MODES = {"memory": "no spool: 200 once in memory", "durable": "`--spool-dir`: 200 once fsync'd (write-ahead log)"}


@dataclass
class DurabilityRun:
    requests: int
    rounds: int
    accepted: dict[str, list[float]] = field(default_factory=dict)  # mode -> requests/s answered 200
    delivered: dict[str, list[float]] = field(default_factory=dict)  # mode -> requests/s, every thread uploaded
    commits: list[int] = field(default_factory=list)  # write-ahead log transactions per durable round

    def rate(self, mode: str, delivered: bool = False) -> float:
        return median((self.delivered if delivered else self.accepted)[mode])

    @property
    def ratio(self) -> float:
        return self.rate("durable") / self.rate("memory")


def run(
    api: LocalApiProcess, mix: SpanMix, *, requests: int, rounds: int, log: Callable[[str], None] = print
) -> DurabilityRun:
    batches = mix.span_batches((requests + WARMUP) * SPANS_PER_REQUEST, SPANS_PER_REQUEST)[: requests + WARMUP]
    warm_batches, batches = batches[:WARMUP], batches[WARMUP:]
    warm_bodies = [encode_spans(batch).SerializeToString() for batch in warm_batches]
    bodies = [encode_spans(batch).SerializeToString() for batch in batches]
    result = DurabilityRun(requests, rounds)
    for round_no in range(rounds):
        for mode in MODES if round_no % 2 == 0 else reversed(MODES):
            with ServeProcess(api.url, settle_ms=100, spool=mode == "durable") as serve:
                asyncio.run(post_all(serve.url, warm_bodies, 1))
                warm = wait_delivered(serve, _roots(warm_batches))
                started = time.perf_counter()
                asyncio.run(post_all(serve.url, bodies, CONCURRENCY))
                accept_s = time.perf_counter() - started
                counters = wait_delivered(serve, warm["threads_converted"] + _roots(batches))
                done_s = time.perf_counter() - started
            result.accepted.setdefault(mode, []).append(requests / accept_s)
            result.delivered.setdefault(mode, []).append(requests / done_s)
            if mode == "durable":
                result.commits.append(counters.get("wal_commits", 0) - warm.get("wal_commits", 0))
            log(f"  {mode}: {requests / accept_s:,.0f} requests/s answered, {requests / done_s:,.0f} delivered")
    return result


def section(run: DurabilityRun) -> Section:
    rows = [
        (
            what,
            num(run.rate(mode), 0),
            num(run.rate(mode) * SPANS_PER_REQUEST, 0),
            f"{run.rate(mode) / run.rate('memory'):.2f}",
            num(run.rate(mode, delivered=True), 0),
            f"{run.rate(mode, delivered=True) / run.rate('memory', delivered=True):.2f}",
        )
        for mode, what in MODES.items()
    ]
    per_commit = run.requests / median([float(c) for c in run.commits]) if run.commits and min(run.commits) else 0.0
    body = "\n".join(
        [
            f"{run.requests:,} OTLP/HTTP protobuf requests of {SPANS_PER_REQUEST} spans from the realistic mix, "
            f"posted with {CONCURRENCY} connections to a fresh `otel-context serve` (own process, settle 100 ms) "
            f"of each kind, {run.rounds} round(s) alternating; medians. With a spool the sidecar answers only "
            "after the request is in its write-ahead log (SQLite, `synchronous=FULL`), group-committed by one "
            f"writer thread: {per_commit:.1f} requests per commit (fsync), median. Threads are also fsync'd "
            "to the spool before upload.",
            "",
            table(
                ("sidecar", "requests/s answered 200", "spans/s", "× no spool", "requests/s delivered", "× no spool"),
                rows,
            ),
            "",
            f"Durable acknowledgement keeps **{run.ratio:.0%}** of the requests/s answered without a spool "
            f"(goal ≥ {RATIO_GOAL:.0%}). Until every thread is uploaded the spool costs more: it fsyncs each "
            "thread when it is queued, with or without the log (its removal after the upload is not fsync'd: "
            "a removal a crash forgets is one idempotent resend).",
        ]
    )
    target = Target(
        "sidecar requests/s, durable ack ÷ no spool", f"{run.ratio:.2f}", f"≥ {RATIO_GOAL:g}", run.ratio >= RATIO_GOAL
    )
    return Section(DURABILITY, body, [target])
