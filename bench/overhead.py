"""Benchmark 1: the app's per-call latency under each telemetry set-up, one worker process per set-up.

Rounds run every set-up once each, in a rotated order, and pool the samples: on a noisy machine drift
then spreads over all set-ups instead of landing on one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import OVERHEAD, Section, Target, num, pct, table
from .services import TOKEN, LocalApiProcess, OtlpSink
from .stats import median, percentile, ratio

SETUPS = ("none", "none-llmchain", "legacy", "noop", "otel-context", "otlp")
BASELINE = {"legacy": "none-llmchain", "noop": "none", "otel-context": "none", "otlp": "none"}
WHAT = {
    "none": "LCEL chain, no telemetry",
    "none-llmchain": "same chain as `LLMChain`, no telemetry",
    "legacy": "`LLMChain` + old `ContextCallbackHandler` (blocking upload)",
    "noop": "instrumentation + `BatchSpanProcessor(no-op exporter)`",
    "otel-context": "instrumentation + `BatchSpanProcessor(ContextSpanExporter)`",
    "otlp": "instrumentation + `BatchSpanProcessor(OTLPSpanExporter)` to a local sink",
}
THREAD_GROUPS = {
    "app thread": "app thread",
    "OtelBatchSpanRecordProcessor": "span processor",
    "otel-context-delivery": "upload workers",
    "otel-context-helper": "upload workers",  # delivery=process: the thread that feeds the helper and reads its acks
}
GROUP_ORDER = (*dict.fromkeys(THREAD_GROUPS.values()), "other")
CHART_PAIRS = (*BASELINE.items(), ("otel-context", "noop"))
SHARE_GOAL = 0.02
RATIO_GOAL = 100.0


@dataclass
class OverheadRun:
    """Pooled samples (ns) per (set-up, latency), and each worker's own report."""

    n: int
    rounds: int
    latencies: list[float]
    samples: dict[tuple[str, float], list[int]] = field(default_factory=dict)
    round_medians: dict[tuple[str, float], list[float]] = field(default_factory=dict)
    delivered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cpu_s: dict[tuple[str, float], dict[str, float]] = field(default_factory=dict)  # summed over rounds

    def cpu_us_per_call(self, setup: str, latency: float) -> dict[str, float]:
        """CPU µs per call by thread group (app thread, span processor, upload workers, other)."""
        calls = len(self.samples.get((setup, latency), [])) or 1
        out = dict.fromkeys(GROUP_ORDER, 0.0)
        for name, seconds in self.cpu_s.get((setup, latency), {}).items():
            group = THREAD_GROUPS.get(name, "other")
            out[group] = out.get(group, 0.0) + seconds * 1e6 / calls
        return out

    def med_us(self, setup: str, latency: float) -> float:
        return median(self.samples.get((setup, latency), [])) / 1000

    def p99_us(self, setup: str, latency: float) -> float:
        return percentile(self.samples.get((setup, latency), []), 99) / 1000


def _worker_env() -> dict[str, str]:
    """The runner's environment without OTel or Context settings that would change a set-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "TRACELOOP_"))}
    env["PYTHONHASHSEED"] = "0"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(setup: str, api_url: str, sink_url: str, n: int, warmup: int, latencies: list[float]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.overhead_worker",
        setup,
        api_url,
        str(n),
        "--sink",
        sink_url,
        "--token",
        TOKEN,
        "--warmup",
        str(warmup),
        "--latencies",
        ",".join(str(x) for x in latencies),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=_worker_env(), timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"overhead worker {setup} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(
    api: LocalApiProcess,
    sink: OtlpSink,
    *,
    n: int,
    warmup: int,
    rounds: int,
    latencies: list[float],
    log: Callable[[str], None] = print,
) -> OverheadRun:
    result = OverheadRun(n=n, rounds=rounds, latencies=latencies)
    for round_no in range(rounds):
        shift = round_no % len(SETUPS)
        order = SETUPS[shift:] + SETUPS[:shift]
        if round_no % 2:
            order = tuple(reversed(order))
        for setup in order:
            report = run_worker(setup, api.url, sink.url, n, warmup, latencies)
            for phase in report["phases"]:
                key = (setup, phase["latency_s"])
                summed = result.cpu_s.setdefault(key, {})
                for name, seconds in phase.get("cpu_s", {}).items():
                    summed[name] = summed.get(name, 0.0) + seconds
                result.samples.setdefault(key, []).extend(phase["ns"])
                result.round_medians.setdefault(key, []).append(median(phase["ns"]) / 1000)
            result.delivered.setdefault(setup, []).append(report["delivered"])
            medians = ", ".join(f"{median(p['ns']) / 1000:,.0f} µs" for p in report["phases"])
            log(f"  round {round_no + 1}/{rounds} {setup:<13} median per call {medians}")
    return result


def _added(run: OverheadRun, setup: str, latency: float) -> float:
    base = BASELINE.get(setup)
    return run.med_us(setup, latency) - run.med_us(base, latency) if base else 0.0


def share(run: OverheadRun, latency: float) -> float:
    """otel-context's share of the instrumented call: (otel-context − noop) / noop, on medians."""
    noop = run.med_us("noop", latency)
    return (run.med_us("otel-context", latency) - noop) / noop


def legacy_ratio(run: OverheadRun, latency: float, base: str = "none") -> float:
    """Legacy added latency over otel-context's, otel-context measured against `base` (none or noop)."""
    legacy_added = _added(run, "legacy", latency)
    ours = run.med_us("otel-context", latency) - run.med_us(base, latency)
    return ratio(legacy_added, ours)


def section(run: OverheadRun, chart: str) -> Section:
    slow = max(run.latencies)
    rows = []
    for latency in run.latencies:
        for setup in SETUPS:
            base = BASELINE.get(setup)
            added = _added(run, setup, latency)
            rows.append(
                (
                    f"{latency * 1000:g} ms",
                    f"`{setup}`",
                    WHAT[setup],
                    num(run.med_us(setup, latency)),
                    num(run.p99_us(setup, latency)),
                    f"{num(added)} (vs `{base}`)" if base else "—",
                    pct(added / run.med_us(base, latency)) if base else "—",
                )
            )
    header = ("API latency", "set-up", "what", "median µs", "p99 µs", "added median µs", "added %")
    shares = {latency: share(run, latency) for latency in run.latencies}
    per_round = "; ".join(
        f"{latency * 1000:g} ms: "
        + ", ".join(
            pct((oc - nop) / nop, 2)
            for oc, nop in zip(
                run.round_medians[("otel-context", latency)], run.round_medians[("noop", latency)], strict=True
            )
        )
        for latency in run.latencies
    )
    ratio_none = legacy_ratio(run, slow, "none")
    ratio_noop = legacy_ratio(run, slow, "noop")
    legacy_notes = run.delivered.get("legacy", [{}])[0]
    cpu_rows = []
    for latency in run.latencies:
        for setup in SETUPS:
            cpu = run.cpu_us_per_call(setup, latency)
            background = sum(v for k, v in cpu.items() if k != "app thread")
            cpu_rows.append((f"{latency * 1000:g} ms", f"`{setup}`", *(num(v) for v in cpu.values()), num(background)))
    ours_cpu = {
        latency: _background(run, "otel-context", latency) - _background(run, "noop", latency)
        for latency in run.latencies
    }
    lines = [
        f"The seed's company-name chain (`ChatPromptTemplate | FakeListChatModel | StrOutputParser()`), "
        f"{run.n:,} timed `invoke()` calls per set-up and round on the app's thread after a warm-up, "
        f"{run.rounds} round(s) (set-ups in rotated order, samples pooled), each set-up in its own process "
        "(`python -m bench.overhead_worker`). Latency is added to the local Context API (fault mode) and to "
        "the OTLP sink alike. `provider.shutdown()` runs after the timed loops.",
        "",
        table(header, rows, "lllrrrr"),
        "",
        f"![overhead]({chart})",
        "",
        "- otel-context's share of the instrumented call, (otel-context − noop) / noop: "
        + ", ".join(f"{pct(v, 2)} at {latency * 1000:g} ms" for latency, v in shares.items())
        + f" (per round: {per_round}).",
        f"- Legacy added latency / otel-context added latency at {slow * 1000:g} ms: **{num(ratio_none)}×** "
        f"(otel-context vs `none`, so it includes the OpenLLMetry instrumentation's own cost, the `noop` row); "
        f"against otel-context's own cost alone (otel-context − noop): {num(ratio_noop)}×.",
        "- The old handler only works on `LLMChain` with the handler given to both the chain and the model. "
        f"On the LCEL version of the same chain it raised {legacy_notes.get('lcel_callback_errors', 'n/a')} "
        f"callback error(s) (first: `{legacy_notes.get('lcel_first_error', '')}`) and stored "
        f"{legacy_notes.get('lcel_threads_stored', 'n/a')} thread(s): it breaks on LCEL chains.",
        "",
        "CPU per call by thread (user + system from /proc/self/task, timed loop plus the untimed drain that "
        "follows it, so background work caused by these calls is all counted; 10 ms clock ticks):",
        "",
        table(("API latency", "set-up", *(f"{g} µs" for g in GROUP_ORDER), "background total µs"), cpu_rows),
        "",
        "- otel-context's own background CPU per call (its background total − noop's): "
        + ", ".join(
            f"{num(v)} µs at {latency * 1000:g} ms ({pct(v / run.med_us('noop', latency))} of the noop call)"
            for latency, v in ours_cpu.items()
        )
        + ". On 2 cores with one GIL this work competes with the app thread; that is what the median and p99 "
        "rows above show.",
        "- Delivered (per round): "
        + "; ".join(f"`{setup}` {_delivered_text(reports)}" for setup, reports in run.delivered.items() if reports[0]),
    ]
    targets = [
        Target(
            f"otel-context share of instrumented call ({latency * 1000:g} ms API)",
            pct(value, 2),
            f"< {SHARE_GOAL:.0%}",
            value < SHARE_GOAL,
        )
        for latency, value in shares.items()
    ]
    # The issue counts the instrumentation with a no-op exporter as "its own cost, which is not ours":
    # otel-context's added latency is otel-context − noop. The figure against `none` is reported beside it.
    targets.append(
        Target(
            f"legacy added / otel-context's own added latency ({slow * 1000:g} ms API)",
            f"{num(ratio_noop)}× (vs none: {num(ratio_none)}×)",
            f"≥ {RATIO_GOAL:g}×",
            ratio_noop >= RATIO_GOAL,
        )
    )
    return Section(OVERHEAD, "\n".join(lines), targets)


def _background(run: OverheadRun, setup: str, latency: float) -> float:
    return sum(v for k, v in run.cpu_us_per_call(setup, latency).items() if k != "app thread")


def _delivered_text(reports: list[dict[str, Any]]) -> str:
    keys = ("threads_uploaded", "threads_stored", "spans_exported", "spans_received_by_sink", "threads_dropped")
    parts = []
    for report in reports:
        shown = {k: report[k] for k in keys if k in report}
        parts.append(", ".join(f"{k}={v}" for k, v in shown.items()))
    return " / ".join(parts)


def chart(run: OverheadRun, path: Path) -> None:
    """Median per-call latency per set-up (bars, p99 as ticks), and the added latency, on log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(run.latencies)
    for index, latency in enumerate(run.latencies):
        xs = [i + (index - (len(run.latencies) - 1) / 2) * width for i in range(len(SETUPS))]
        medians = [run.med_us(s, latency) for s in SETUPS]
        bars = left.bar(xs, medians, width, label=f"API +{latency * 1000:g} ms")
        left.scatter(xs, [run.p99_us(s, latency) for s in SETUPS], marker="_", color="black", s=120, zorder=3)
        left.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], fontsize=7)
        added = [run.med_us(s, latency) - run.med_us(b, latency) for s, b in CHART_PAIRS]
        xs2 = [i + (index - (len(run.latencies) - 1) / 2) * width for i in range(len(CHART_PAIRS))]
        bars2 = right.bar(xs2, [max(a, 0.1) for a in added], width, label=f"API +{latency * 1000:g} ms")
        right.bar_label(bars2, labels=[f"{a:,.0f}" for a in added], fontsize=7)
    left.set_xticks(range(len(SETUPS)), SETUPS, rotation=15)
    left.set_yscale("log")
    left.set_ylabel("µs per invoke() (median; — = p99)")
    left.set_title("Per-call latency on the app's thread")
    left.legend()
    right.set_xticks(range(len(CHART_PAIRS)), [f"{s}\nvs {b}" for s, b in CHART_PAIRS])
    right.set_yscale("log")
    right.set_ylabel("added µs per invoke() (median)")
    right.set_title("Added latency over the baseline")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
