"""`python -m bench [--quick] [--out DIR]`: run every benchmark side by side, print and write the results.

Writes `results.md` and `overhead.png` to `--out` (default: this `bench/` folder). `--quick` is the CI
smoke run (under a minute, figures indicative only).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import (
    capacity,
    conversion,
    cpu,
    delivery,
    durability,
    flush,
    machine,
    memory,
    overhead,
    replicas,
    report,
    sidecar,
    soak,
)
from .apps import SpanMix, capture_mix
from .services import LocalApiProcess, OtlpSink

HERE = Path(__file__).resolve().parent
ALL = ("overhead", "conversion", "sidecar", "memory", "delivery", "durability", "flush", "cpu", "workers", "soak")


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run."""

    n: int
    warmup: int
    rounds: int
    conversion_spans: int
    conversion_repeats: int
    sidecar_requests: int
    sidecar_sends: int
    memory_traces: int
    delivery: tuple[tuple[float, int], ...]
    durability_requests: int
    durability_rounds: int
    workers_requests: int
    soak_minutes: float = 10.0  # each soak (sidecar, app); 0: none (`--quick`)
    latencies: tuple[float, ...] = (0.0, 0.02)


FULL = Plan(2000, 200, 3, 100_000, 7, 1000, 300, 10_000, ((0.0, 5000), (0.02, 1000)), 1000, 3, 400)
QUICK = Plan(200, 30, 1, 10_000, 3, 40, 50, 10_000, ((0.0, 300), (0.02, 100)), 60, 1, 20, 0.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run in under a minute")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.md and overhead.png go (default bench/)")
    parser.add_argument("--n", type=int, help="timed calls per set-up, phase and round (benchmark 1)")
    parser.add_argument("--rounds", type=int, help="rounds of benchmark 1")
    parser.add_argument(
        "--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)} (default: all)"
    )
    parser.add_argument(
        "--no-phoenix", action="store_true", help="section 3 without Arize Phoenix (10-30 minutes of a full run)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(ALL)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    n = args.n or plan.n
    rounds = args.rounds or plan.rounds
    facts = machine.describe()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    sections: list[report.Section] = []
    served = held = scaled = soaked = None  # what the capacity table is computed from
    with LocalApiProcess() as api, OtlpSink() as sink:
        log(f"local Context API at {api.url}, OTLP sink at {sink.url}")
        mix = SpanMix(capture_mix())
        if "overhead" in only:
            log(f"1. app overhead: {n} calls x {len(overhead.SETUPS)} set-ups x {len(plan.latencies)} latencies")
            result = overhead.run(
                api, sink, n=n, warmup=plan.warmup, rounds=rounds, latencies=list(plan.latencies), log=log
            )
            overhead.chart(result, args.out / "overhead.png")
            sections.append(overhead.section(result, "overhead.png"))
        if "conversion" in only:
            log("2. conversion throughput")
            converted = conversion.run(mix, total_spans=plan.conversion_spans, repeats=plan.conversion_repeats)
            sections.append(conversion.section(converted))
        if "sidecar" in only:
            log("3. sidecar throughput")
            served = sidecar.run(
                api,
                mix,
                requests=plan.sidecar_requests,
                sends=plan.sidecar_sends,
                peer=not (args.quick or args.no_phoenix),
                log=log,
            )
            sections.append(sidecar.section(served))
        if "memory" in only:
            log("4. memory")
            held = memory.run(plan.memory_traces)
            sections.append(memory.section(held))
        if "delivery" in only:
            log("5. end-to-end delivery")
            runs = delivery.run(api, mix, list(plan.delivery), log=log)
            faults = delivery.run_faults(api, mix, plan.delivery[0][1] // 5, log=log)
            sections.append(delivery.section(runs, faults))
        if "durability" in only:
            log("6. durable acknowledgement")
            measured = durability.run(
                api, mix, requests=plan.durability_requests, rounds=plan.durability_rounds, log=log
            )
            sections.append(durability.section(measured))
        if "flush" in only:
            log("7. force_flush() per call")
            flushed = flush.run(api, sink, n=max(50, n // 10), rounds=rounds, log=log)
            sections.append(flush.section(flushed))
        if "cpu" in only:
            # background CPU is a small difference of two large figures: more rounds than benchmark 1
            calls, cpu_rounds = (200, 1) if args.quick else (1500, max(rounds, 5))
            log(f"8. whole-process CPU per call: {calls} calls x {len(cpu.SETUPS)} set-ups x {cpu_rounds} round(s)")
            measured_cpu = cpu.run(api, sink, n=calls, warmup=plan.warmup, rounds=cpu_rounds, log=log)
            sections.append(cpu.section(measured_cpu))
        if "workers" in only:
            log("9. workers and replicas" + (" (workers only)" if args.quick else ""))
            scaled = replicas.run(plan.workers_requests, log=log, replicas=not args.quick, mix=mix)
            sections.append(replicas.section(scaled, plan.workers_requests))
    if "soak" in only and plan.soak_minutes > 0:  # its own API, Redis and sidecar: after the shared API is stopped
        log(f"10. soak: the sidecar, then an app, {plan.soak_minutes:g} min each at 70 % of capacity")
        soaked = soak.soak_sidecar(plan.soak_minutes, 0.7, 60.0, 25.0, traces=mix.traces)
        app_soaked = soak.soak_app(plan.soak_minutes, 0.7, 60.0, 10.0)
        sections.append(soak.section(soaked, app_soaked))
    sections.append(capacity.section(served, scaled, held, soaked))
    mode = "quick (smoke run: counts too small for conclusions)" if args.quick else "full"
    settings = (
        f"Mode: **{mode}**; `python -m bench{' --quick' if args.quick else ''}` took "
        f"{time.perf_counter() - started:,.0f} s. Medians and ratios are measured side by side in this one run."
    )
    text = report.render(facts, settings, sections)
    path = report.write(args.out, text)
    print(text)
    log(f"wrote {path}" + (f" and {args.out / 'overhead.png'}" if "overhead" in only else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
