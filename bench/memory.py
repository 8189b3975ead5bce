"""Benchmark 4: memory of a `TraceBuffer` holding 10,000 open traces, and its bound.

Runs in a subprocess (`python -m bench.memory TRACES`) so RSS belongs to this measurement alone: it
feeds the children of `TRACES` chain traces (roots withheld), then as many again (the count bound
evicts the oldest), then advances a fake clock past `max_age_s` (the age bound evicts the rest),
reading VmRSS / VmHWM from /proc/self/status at each step.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .report import MEMORY, Section, Target, num, table

BATCH_SPANS = 512


def proc_status_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def measure(traces: int) -> dict[str, Any]:
    """The measurement itself (in the worker process)."""
    from otel_context.assembly.trace_buffer import TraceBuffer

    from .apps import SpanMix, capture_mix

    captured = [t for t in capture_mix(1) if len(t) > 1]  # chains: traces with children to hold
    mix = SpanMix(captured)
    clock = FakeClock()
    buffer = TraceBuffer(clock=clock)  # the default bounds: max_traces=10,000, max_age_s=600
    counters = buffer.counters
    children_per_trace = max(len(t) - 1 for t in captured)
    gc.collect()
    steps: list[dict[str, Any]] = []

    def step(name: str) -> None:
        gc.collect()
        steps.append(
            {
                "step": name,
                "rss_kib": proc_status_kib("VmRSS"),
                "hwm_kib": proc_status_kib("VmHWM"),
                "blocks": sys.getallocatedblocks(),
                "held_traces": buffer.held_traces,
                "held_spans": buffer.held_spans,
                "traces_evicted": counters.get("traces_evicted"),
                "spans_evicted": counters.get("spans_evicted"),
            }
        )

    max_seen = {"traces": 0, "spans": 0}

    def feed(count: int) -> None:
        batch: list[Any] = []
        for trace in mix.record_traces(count):
            batch.extend(record for record in trace if record.parent_id is not None)  # the root never comes
            if len(batch) >= BATCH_SPANS:
                buffer.add(batch)
                batch = []
                max_seen["traces"] = max(max_seen["traces"], buffer.held_traces)
                max_seen["spans"] = max(max_seen["spans"], buffer.held_spans)
                clock.now += 0.001
        buffer.add(batch)
        max_seen["traces"] = max(max_seen["traces"], buffer.held_traces)
        max_seen["spans"] = max(max_seen["spans"], buffer.held_spans)

    step("empty buffer (after imports)")
    feed(traces)
    step(f"{traces:,} traces held open")
    feed(traces)
    step(f"{traces:,} more traces (count bound)")
    clock.now += buffer.max_age_s + 1
    buffer.due()
    step("clock past max_age_s (age bound)")
    return {
        "traces": traces,
        "mix": mix.describe(),
        "max_traces": buffer.max_traces,
        "max_age_s": buffer.max_age_s,
        "children_per_trace_max": children_per_trace,
        "max_held_traces": max_seen["traces"],
        "max_held_spans": max_seen["spans"],
        "steps": steps,
    }


def run(traces: int) -> dict[str, Any]:
    """Run `measure` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(traces)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def section(result: dict[str, Any]) -> Section:
    base = result["steps"][0]
    rows = [
        (
            s["step"],
            num(s["rss_kib"] / 1024),
            num((s["rss_kib"] - base["rss_kib"]) / 1024),
            num(s["hwm_kib"] / 1024),
            f"{s['blocks'] - base['blocks']:+,}",
            f"{s['held_traces']:,}",
            f"{s['held_spans']:,}",
            f"{s['traces_evicted']:,}",
            f"{s['spans_evicted']:,}",
        )
        for s in result["steps"]
    ]
    header = ("step", "VmRSS MiB", "Δ RSS MiB", "VmHWM MiB", "Δ allocated blocks", "held traces", "held spans")
    header += ("traces evicted", "spans evicted")
    bound_spans = result["max_traces"] * result["children_per_trace_max"]
    held = result["steps"][1]
    per_trace = (held["rss_kib"] - base["rss_kib"]) * 1024 / max(held["held_traces"], 1)
    holds = result["max_held_traces"] <= result["max_traces"] and result["max_held_spans"] <= bound_spans
    last = result["steps"][-1]
    body = "\n".join(
        [
            f"A `TraceBuffer` with its default bounds (max_traces={result['max_traces']:,}, "
            f"max_age_s={result['max_age_s']:g}) fed the children of {result['traces']:,} chain traces whose roots "
            f"never come ({result['mix']}), in batches of {BATCH_SPANS} spans, in a fresh process; RSS read from "
            "/proc/self/status.",
            "",
            table(header, rows),
            "",
            f"- About {num(per_trace / 1024, 2)} KiB of RSS per held trace. RSS also counts memory the allocator "
            "keeps after the incoming spans (each with its own attribute dict) are converted and freed; the "
            "allocated-block count is what stays alive.",
            f"- Bound: at most {result['max_held_traces']:,} traces / {result['max_held_spans']:,} spans were "
            "ever held "
            f"(limit {result['max_traces']:,} traces × {result['children_per_trace_max']} children = "
            f"{bound_spans:,} spans): {'holds' if holds else '**broken**'}; all {last['traces_evicted']:,} evicted "
            f"traces ({last['spans_evicted']:,} spans) counted, none held at the end. After eviction RSS is "
            f"{num((last['rss_kib'] - base['rss_kib']) / 1024)} MiB above the start (CPython may keep freed memory "
            f"for reuse); {last['blocks'] - base['blocks']:+,} allocated blocks remain.",
        ]
    )
    value = f"{result['max_held_traces']:,} traces / {result['max_held_spans']:,} spans"
    target = Target("trace buffer bound holds", value, f"≤ {result['max_traces']:,} traces", holds)
    return Section(MEMORY, body, [target])


if __name__ == "__main__":
    sys.stdout.write(json.dumps(measure(int(sys.argv[1]))) + "\n")
