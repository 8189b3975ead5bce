"""`python -m bench.phases [--requests N] [--rounds R] [--against PATH]`: the sidecar's conversion work, by phase.

Milliseconds of CPU per OTLP request of 100 spans (the bench's realistic mix) for each step the sidecar
takes on a body before it uploads: the work bound (`check_protobuf`), the protobuf decode, span records,
assembly and conversion (`TraceBuffer.add`), the session fold (SQLite book) and the JSON upload bodies;
`FromString` alone is printed as the floor no decoder of these bodies goes under. With `--against`,
another checkout runs the same bodies in turns with this one (one process each, its own imports), so a
change is judged by a ratio taken on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PHASES = ("limits", "decode", "records", "assembly", "fold", "bodies")


def measure(requests: int) -> dict[str, float]:
    """This checkout's phases, ms per 100-span request (the second pass over the bodies: the first warms)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_context.assembly.trace_buffer import TraceBuffer
    from otel_context.delivery.item import encode_thread
    from otel_context.spans.otlp import decode_protobuf, records_from_request
    from otel_context.spans.otlp_limits import RequestLimits, check_protobuf

    from .apps import SpanMix, capture_mix
    from .sidecar import session_fold

    mix = SpanMix(capture_mix())
    bodies = [encode_spans(b).SerializeToString() for b in mix.span_batches(requests * 100, 100)[:requests]]
    spent = dict.fromkeys((*PHASES, "floor"), 0.0)
    uploads = 0
    for measured in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-phases-") as state:
            folding = session_fold(state)  # a new book each pass: the second must not see its turns as repeats
            buffer, limits, clock = TraceBuffer(), RequestLimits(), time.process_time
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
                sent = folding[0](threads) if folding else threads
                t5 = clock()
                for thread in sent:
                    encode_thread(thread)
                t6 = clock()
                ExportTraceServiceRequest.FromString(body)
                t7 = clock()
                if measured:
                    for name, begin, end in zip(
                        (*PHASES, "floor"), (t0, t1, t2, t3, t4, t5, t6), (t1, t2, t3, t4, t5, t6, t7), strict=True
                    ):
                        spent[name] += end - begin
                    uploads += len(sent)
            if folding:
                folding[1].close()
    return {**{name: seconds * 1e3 / len(bodies) for name, seconds in spent.items()}, "uploads": uploads / len(bodies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="100-span requests per pass (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per checkout, in turns (default 3)")
    parser.add_argument("--against", type=Path, help="another checkout to measure in turns with this one")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: print one JSON line
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.requests)))
        return 0
    roots = [HERE] + ([args.against.resolve()] if args.against else [])
    runs: dict[Path, list[dict[str, float]]] = {root: [] for root in roots}
    for _ in range(args.rounds):
        for root in roots:
            out = subprocess.run(
                [sys.executable, "-m", "bench.phases", "--one", "--requests", str(args.requests)],
                cwd=root,
                check=True,
                capture_output=True,
                text=True,
                env={**_env(), "PYTHONPATH": str(root)},
            ).stdout
            runs[root].append(json.loads(out.strip().splitlines()[-1]))
    print(f"ms of CPU per 100-span request (median of {args.rounds}); floor = FromString alone")
    names = (*PHASES, "total", "floor")
    print(f"{'checkout':<28}" + "".join(f"{n:>10}" for n in names))
    medians: dict[Path, dict[str, float]] = {}
    for root, results in runs.items():
        for result in results:
            result["total"] = sum(result[p] for p in PHASES)
        medians[root] = {n: sorted(r[n] for r in results)[len(results) // 2] for n in names}
        print(f"{str(root)[-28:]:<28}" + "".join(f"{medians[root][n]:>10.3f}" for n in names))
    if args.against:
        mine, theirs = medians[HERE], medians[roots[1]]
        print(
            f"{'ratio (this ÷ other)':<28}"
            + "".join(f"{mine[n] / theirs[n] if theirs[n] else 0:>10.2f}" for n in names)
        )
    print(f"uploads per 100-span request: {runs[HERE][0]['uploads']:.1f}")
    total = medians[HERE]["total"]
    floor = medians[HERE]["floor"]
    print(f"this checkout: {100_000 / total:,.0f} spans per CPU-second before uploads; {total / floor:.1f}× the floor")
    return 0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    sys.exit(main())
