"""Markdown tables, the results file and the overhead chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MACHINE = "## Machine"
TARGETS = "## Targets"
OVERHEAD = "## 1. App overhead per call"
CONVERSION = "## 2. Conversion throughput"
SIDECAR = "## 3. Sidecar throughput"
MEMORY = "## 4. Memory"
DELIVERY = "## 5. End-to-end delivery"
DURABILITY = "## 6. Durable acknowledgement"
FLUSH = "## 7. `force_flush()` per call (serverless)"
CPU = "## 8. Whole-process CPU per call, against the OTLP exporter"
WORKERS = "## 9. Workers and replicas"
SOAK = "## 10. Soak: 70 % of capacity for 10 minutes"
CAPACITY = "## 11. Capacity"
SECTIONS = (
    MACHINE,
    TARGETS,
    OVERHEAD,
    CONVERSION,
    SIDECAR,
    MEMORY,
    DELIVERY,
    DURABILITY,
    FLUSH,
    CPU,
    WORKERS,
    CAPACITY,
)
FULL_ONLY = (SOAK,)  # not in `--quick`: the soak's plumbing has a smoke test of its own (tests/e2e/test_bench_smoke.py)


@dataclass
class Target:
    """One target figure: what was measured against what was asked."""

    name: str
    value: str
    goal: str
    met: bool


@dataclass
class Section:
    """One benchmark's part of results.md."""

    title: str
    body: str
    targets: list[Target] = field(default_factory=list)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A markdown table; `align` is one letter per column, `l` or `r` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float, digits: int = 1) -> str:
    """A number for a table: thousands separated, `∞` and `n/a` spelled out."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}"


def pct(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 100:+.{digits}f} %"


def render(machine: dict[str, str], settings: str, sections: list[Section]) -> str:
    targets = [t for s in sections for t in s.targets]
    out = ["# otel-context benchmarks", "", settings, "", MACHINE, ""]
    out += [f"- **{key}**: {value}" for key, value in machine.items()]
    out += ["", TARGETS, ""]
    rows = [(t.name, t.value, t.goal, "met" if t.met else "**missed**") for t in targets]
    out += [table(("target", "measured", "goal", ""), rows, "lrrl"), ""]
    for section in sections:
        out += [section.title, "", section.body.strip(), ""]
    return "\n".join(out)


def write(out_dir: Path, text: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.md"
    path.write_text(text, encoding="utf-8")
    return path
