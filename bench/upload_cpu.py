"""`python -m bench.upload_cpu [--uploads N] [--rounds R] [--against PATH]`: client CPU per thread upload.

One local Context API process serves every run. The same pre-encoded thread bodies (the bench's realistic
mix, encoded once by this checkout) are uploaded in a child process per checkout (its own imports, through
`PYTHONPATH`), in turns, two ways:
- `sender`: one after another through `ContextSender.send` (one keep-alive connection);
- `queue`: offered at once to a `DeliveryQueue` (queue -> retry -> read-back -> timeout -> send, with the
  exporter's default workers and batch size) and flushed, as the exporter and the sidecar deliver.
What is printed is the child's process CPU (`time.process_time`, all its threads) per upload, in µs, the
median over rounds; with `--against`, the ratio this ÷ other, so a change is judged on the same machine at
the same time (identical code differs by 10-20 % between runs here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MODES = ("sender", "queue")
WARM = 100  # uploads before measuring: connection, client build, first-call costs


def encode_items(count: int, path: Path) -> None:
    """`count` realistic thread bodies, as JSON lines of [thread id, body, segment key]."""
    from otel_context.assembly.trace_buffer import TraceBuffer
    from otel_context.delivery.item import encode_thread

    from .apps import SpanMix, capture_mix

    mix = SpanMix(capture_mix())
    buffer = TraceBuffer()
    threads = []
    while len(threads) < count:
        threads += [t for trace in mix.record_traces(min(count, 1000)) for t in buffer.add(trace)]
    with path.open("w") as out:
        for thread in threads[:count]:
            out.write(json.dumps([thread.id, encode_thread(thread).decode(), thread.segment]) + "\n")


def measure(url: str, token: str, path: Path) -> dict[str, float]:
    """In the child: µs of process CPU per upload, each mode (runs the checkout `PYTHONPATH` names)."""
    import otel_context
    from otel_context.config import resolve_settings
    from otel_context.counters import Counters
    from otel_context.delivery.item import QueueItem
    from otel_context.delivery.sender import ContextSender
    from otel_context.delivery.workers import DeliveryQueue

    rows = [json.loads(line) for line in path.read_text().splitlines()]

    def items() -> list[QueueItem]:
        return [QueueItem(tid, body.encode(), segment=segment) for tid, body, segment in rows]

    settings = resolve_settings(endpoint=url, token=token)
    result: dict[str, float | str] = {"code": otel_context.__file__}  # which checkout ran (the parent checks)

    sender = ContextSender(settings)
    batch = items()
    for item in batch[:WARM]:
        sender.send(item)
    begin = time.process_time()
    for item in batch:
        outcome = sender.send(item)
        assert outcome.status == 201, outcome
    result["sender"] = (time.process_time() - begin) * 1e6 / len(batch)
    sender.close()

    sender = ContextSender(settings)
    counters = Counters()
    delivery = DeliveryQueue(sender, settings, counters)
    delivery.offer(items()[:WARM], admitted=True)
    assert delivery.flush(60.0)
    batch = items()
    begin = time.process_time()
    delivery.offer(batch, admitted=True)
    assert delivery.flush(120.0)
    result["queue"] = (time.process_time() - begin) * 1e6 / len(batch)
    delivery.shutdown(5.0)
    sender.close()
    assert counters.get("threads_uploaded") == WARM + len(batch), counters.get("threads_uploaded")
    return result  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upload_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=3000, help="uploads per mode and run (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per checkout, in turns (default 3)")
    parser.add_argument("--against", type=Path, help="another checkout to measure in turns with this one")
    parser.add_argument("--one", nargs=3, metavar=("URL", "TOKEN", "ITEMS"), help=argparse.SUPPRESS)  # a child
    args = parser.parse_args(argv)
    if args.one:
        url, token, items = args.one
        print(json.dumps(measure(url, token, Path(items))))
        return 0

    from .services import TOKEN, LocalApiProcess

    roots = [HERE] + ([args.against.resolve()] if args.against else [])
    runs: dict[Path, list[dict[str, float]]] = {root: [] for root in roots}
    # Run as a file in the child, so that the other checkout (which may not have this bench) is what it imports.
    script = str(Path(__file__).resolve())
    child = f"import runpy, sys; sys.argv[0] = {script!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    with tempfile.TemporaryDirectory(prefix="bench-upload-cpu-") as scratch, LocalApiProcess() as api:
        items = Path(scratch) / "items.jsonl"
        encode_items(args.uploads, items)
        for round_ in range(args.rounds):
            for root in roots:
                out = subprocess.run(
                    [sys.executable, "-c", child, "--one", api.url, TOKEN, str(items)],
                    cwd=root,
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(root)},
                ).stdout
                run = json.loads(out.strip().splitlines()[-1])
                if not Path(run.pop("code")).resolve().is_relative_to(root):  # e.g. an editable install first
                    raise SystemExit(f"the child for {root} did not run its code")
                runs[root].append(run)
                print(f"round {round_ + 1} {root}: {runs[root][-1]}", file=sys.stderr)
    print(f"µs of client CPU per upload (median of {args.rounds} runs of {args.uploads} uploads)")
    print(f"{'checkout':<32}" + "".join(f"{mode:>10}" for mode in MODES))
    medians = {
        root: {mode: statistics.median(r[mode] for r in results) for mode in MODES} for root, results in runs.items()
    }
    for root in roots:
        print(f"{str(root)[-32:]:<32}" + "".join(f"{medians[root][mode]:>10.1f}" for mode in MODES))
    if args.against:
        mine, theirs = medians[HERE], medians[roots[1]]
        print(f"{'ratio (this ÷ other)':<32}" + "".join(f"{mine[m] / theirs[m]:>10.2f}" for m in MODES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
