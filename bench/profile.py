"""Where our time goes: `python -m bench.profile [export|sidecar|upload|app] [--top N]`.

cProfile over the same realistic spans the benchmarks use; prints the top functions by own time and
the top functions of otel-context itself (file:function), so a missed target points at code.

- export:  `records_from_sdk` + `TraceBuffer.add` (the exporter's work on the BatchSpanProcessor thread)
- sidecar: work limits → decode → records → assemble/convert → session fold → JSON bodies, on OTLP
  bodies of 100 spans
- upload:  sequential thread uploads to a local Context API process (the sidecar's delivery cost)
- app:     the app thread of the `otel-context` overhead set-up (instrumented chain calls)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .apps import SpanMix, capture_mix

OURS = "otel_context"
REPO = str(Path(__file__).resolve().parent.parent)  # this checkout: paths in it are shown from its root
CLEANUP: list[Callable[[], object]] = []


def report(profiler: cProfile.Profile, top: int, title: str) -> str:
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (path, _line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((own, cumulative, calls, f"{_short(path)}:{name}", OURS in path))
    out = io.StringIO()
    out.write(f"\n## {title}: {total:.3f} s profiled\n\n")
    ours = [r for r in rows if r[4]]
    listings = (
        ("by own time, all code", sorted(rows, reverse=True)),
        ("by own time, otel-context only", sorted(ours, reverse=True)),
        ("by cumulative time, otel-context only", sorted(ours, key=lambda r: r[1], reverse=True)),
    )
    for label, chosen in listings:
        out.write(f"top {top} {label}:\n")
        out.write(f"{'own s':>8} {'own %':>6} {'cum s':>8} {'calls':>9}  function\n")
        for own, cumulative, calls, where, _ in chosen[:top]:
            out.write(f"{own:8.3f} {own / total:6.1%} {cumulative:8.3f} {calls:9d}  {where}\n")
        out.write("\n")
    return out.getvalue()


def _short(path: str) -> str:
    for marker in ("site-packages/", f"{REPO}/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def profile_export(mix: SpanMix) -> Callable[[], object]:
    from .conversion import ours

    batches = mix.span_batches(50_000, 512)
    return lambda: ours(batches)


def _bodies(mix: SpanMix, requests: int = 300) -> list[bytes]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return [encode_spans(b).SerializeToString() for b in mix.span_batches(requests * 100, 100)[:requests]]


def profile_sidecar(mix: SpanMix) -> Callable[[], object]:
    import tempfile

    from otel_context.assembly.trace_buffer import TraceBuffer
    from otel_context.delivery.item import encode_thread
    from otel_context.spans.otlp import decode_protobuf, records_from_request
    from otel_context.spans.otlp_limits import RequestLimits, check_protobuf

    from .sidecar import session_fold

    bodies = _bodies(mix)
    state = tempfile.TemporaryDirectory(prefix="bench-profile-")
    sessions = session_fold(state.name)
    CLEANUP.append(state.cleanup)
    if sessions is not None:
        CLEANUP.insert(0, sessions[1].close)

    def work() -> None:
        buffer = TraceBuffer()
        limits = RequestLimits()
        for body in bodies:
            check_protobuf(body, limits)
            records, _ = records_from_request(decode_protobuf(body))
            threads = buffer.add(records)
            for thread in sessions[0](threads) if sessions is not None else threads:
                encode_thread(thread)

    return work


def profile_upload(mix: SpanMix) -> Callable[[], object]:
    from otel_context.assembly.trace_buffer import TraceBuffer
    from otel_context.config import resolve_settings
    from otel_context.delivery import ContextSender, QueueItem
    from otel_context.delivery.item import encode_thread

    from .services import TOKEN, LocalApiProcess

    api = LocalApiProcess().start()
    buffer = TraceBuffer()
    threads = [t for trace in mix.record_traces(1000) for t in buffer.add(trace)]
    items = [QueueItem(t.id, encode_thread(t)) for t in threads]
    sender = ContextSender(resolve_settings(endpoint=api.url, token=TOKEN))
    sender.send(items[0])

    def work() -> None:
        try:
            for item in items:
                outcome = sender.send(item)
                assert outcome.status in (200, 201), outcome
        finally:
            sender.close()
            api.stop()

    return work


def profile_app(mix: SpanMix) -> Callable[[], object]:
    from .overhead_worker import build
    from .services import TOKEN, LocalApiProcess

    api = LocalApiProcess().start()
    setup = build("otel-context", api.url, "", TOKEN)
    for _ in range(100):
        setup.call()
    CLEANUP.append(lambda: (setup.shutdown(), api.stop()))  # after profiling: shutdown is not the app's cost
    return lambda: [setup.call() for _ in range(2000)]


TARGETS = {"export": profile_export, "sidecar": profile_sidecar, "upload": profile_upload, "app": profile_app}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}")
    targets = args.targets or list(TARGETS)
    if len(targets) > 1:  # one process each: `app` must instrument LangChain in a process that never did
        for name in targets:
            sys.stdout.flush()
            subprocess.run([sys.executable, "-m", "bench.profile", name, "--top", str(args.top)], check=True)
        return 0
    (name,) = targets
    mix = SpanMix(capture_mix()) if name != "app" else SpanMix([])
    work = TARGETS[name](mix)
    profiler = cProfile.Profile()
    profiler.runcall(work)
    for cleanup in CLEANUP:
        cleanup()
    sys.stdout.write(report(profiler, args.top, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
