"""`python -m bench.serve_cpu [--requests N] [--rounds R] [--against PATH]`: CPU per span of `otel-context serve`.

Benchmark 3's CPU figure alone: the serve process's user + system CPU (all its threads) from the first
measured request until every thread is uploaded to the local Context API, over the spans. With
`--against`, another checkout (a worktree of main, say) serves the same bodies in turns with this one,
so the load of a shared machine falls on both alike; medians are printed at the end. Wall time is
reported but is not the measure: other work on the machine stretches it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from .apps import SpanMix, capture_mix
from .services import LocalApiProcess
from .sidecar import SPANS_PER_CPU_S_GOAL, WARMUP, ServeProcess, _roots, _SpanIds, post_all, wait_delivered
from .stats import median

HERE = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="OTLP requests of 100 spans per run (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per checkout, in turns (default 3)")
    parser.add_argument("--against", type=Path, help="another checkout to measure in turns with this one")
    parser.add_argument("--concurrency", type=int, default=4, help="client connections (default 4)")
    parser.add_argument(
        "--memory", action="store_true", help="no spool: acknowledge once in memory (default: durable, --spool-dir)"
    )
    args = parser.parse_args(argv)
    roots = [HERE] + ([args.against.resolve()] if args.against else [])
    mix = SpanMix(capture_mix())
    batches = mix.span_batches((args.requests + WARMUP) * 100, 100)[: args.requests + WARMUP]
    warm_batches, batches = batches[:WARMUP], batches[WARMUP:]
    ids = _SpanIds()
    warm_bodies = [ids.fresh(encode_spans(batch)).SerializeToString() for batch in warm_batches]
    bodies = [ids.fresh(encode_spans(batch)).SerializeToString() for batch in batches]
    spans = sum(len(batch) for batch in batches)
    measured: dict[Path, list[float]] = {root: [] for root in roots}
    with LocalApiProcess() as api:
        for round_no in range(args.rounds):
            for root in roots:
                with ServeProcess(api.url, 100, root=root, spool=not args.memory) as serve:
                    asyncio.run(post_all(serve.url, warm_bodies, 1))
                    warm = wait_delivered(serve, _roots(warm_batches))
                    cpu_before, started = serve.cpu_s(), time.perf_counter()
                    asyncio.run(post_all(serve.url, bodies, args.concurrency))
                    counters = wait_delivered(serve, warm["threads_converted"] + _roots(batches))
                    wall_s, cpu_s = time.perf_counter() - started, serve.cpu_s() - cpu_before
                us = cpu_s * 1e6 / spans
                measured[root].append(us)
                uploads = counters["threads_uploaded"] - warm["threads_uploaded"]
                print(
                    f"round {round_no + 1} {root}: {us:.1f} µs CPU per span ({spans / cpu_s:,.0f} spans per "
                    f"CPU-second), {wall_s:.1f} s wall, {uploads} uploads",
                    flush=True,
                )
    for root, values in measured.items():
        us = median(values)
        verdict = "meets" if 1e6 / us >= SPANS_PER_CPU_S_GOAL else "misses"
        print(
            f"{root}: median {us:.1f} µs CPU per span = {1e6 / us:,.0f} spans per CPU-second "
            f"({verdict} the goal of {SPANS_PER_CPU_S_GOAL:,}); runs {', '.join(f'{v:.1f}' for v in values)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
