"""Benchmark 11: the capacity table, from figures measured earlier in the same `python -m bench` run.

Nothing is measured here: spans per second per core come from the sidecar's CPU per span (section 3,
durable acknowledgement, one process) and the `--workers 2` run (section 9, trace routing on), memory
per 10,000 open traces from the trace buffer's bound (section 4), and the RSS of a loaded sidecar from
the soak (section 10). Replicas are planned at 70 % of a core's rate, at least two for availability.
"""

from __future__ import annotations

import math
from typing import Any

from .replicas import Figure
from .report import CAPACITY, Section, num, table
from .sidecar import SidecarRun

HEADROOM = 0.7
RATES = (1_000, 10_000, 100_000)  # spans per second to plan for


def section(
    sidecar: SidecarRun | None, workers: list[Figure] | None, memory: dict[str, Any] | None, soak: Any = None
) -> Section:
    rows: list[tuple[str, str, str]] = []
    per_core = sidecar.spans_per_cpu_s if sidecar is not None else 0.0
    spans_per_run = sidecar.spans / sidecar.threads if sidecar is not None and sidecar.threads else 0.0
    if sidecar is not None:
        rows.append(
            (
                "sidecar, one process, durable acknowledgement: spans per second per core",
                num(per_core, 0),
                f"section 3 ({num(spans_per_run, 1)} spans per run in the mix: {num(per_core / spans_per_run, 0)} "
                "runs per second per core)",
            )
        )
    if workers:
        two = workers[1]
        rows.append(
            (
                "`serve --workers 2`, trace routing on: spans per CPU-second, per worker",
                num(two.spans_per_cpu_s, 0),
                f"section 9 (all its processes' CPU; `--workers 1`: {num(workers[0].spans_per_cpu_s, 0)})",
            )
        )
        per_core = min(per_core, two.spans_per_cpu_s) if per_core else two.spans_per_cpu_s
    if memory is not None:
        base, held = memory["steps"][0], memory["steps"][1]
        per_10k = (held["rss_kib"] - base["rss_kib"]) / 1024 * 10_000 / max(held["held_traces"], 1)
        rows.append(
            ("memory per 10,000 open traces (spans waiting for their root)", f"{num(per_10k, 0)} MB", "section 4")
        )
    if soak is not None and getattr(soak, "intervals", None):
        rows.append(
            (
                f"RSS of a sidecar at {soak.fraction:.0%} load (spool, Redis sessions), highest after warm-up",
                f"{num(soak.rss.peak_after_mb, 0)} MB",
                "section 10",
            )
        )
    plan = [(f"{rate:,}", max(2, math.ceil(rate / (per_core * HEADROOM))) if per_core else "n/a") for rate in RATES]
    body = "\n".join(
        [
            "From the figures above (this run, this machine):",
            "",
            table(("figure", "value", "from"), rows, "lrl"),
            "",
            f"Replicas (or workers) of one core each to plan for a rate, at {HEADROOM:.0%} of the lower of the two "
            "per-core figures above, at least two:",
            "",
            table(("spans per second", "replicas of one core"), plan),
        ]
    )
    return Section(CAPACITY, body)
