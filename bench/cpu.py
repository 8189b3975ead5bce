"""Benchmark 8: the whole process's CPU per instrumented call, otel-context against the OTLP exporter.

What an OTel user pays in the app's process: user + system CPU of every thread (app thread, span
processor, upload workers), from after the warm-up to after `provider.shutdown()`, per call. Each
set-up runs in its own process (`bench.overhead_worker`, no added latency); rounds alternate the order.
The added CPU of a set-up is its CPU per call minus the `noop` set-up's (instrumentation plus a
`BatchSpanProcessor` whose exporter does nothing); the ratio is otel-context's added CPU over the
standard `OTLPSpanExporter`'s, per round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .overhead import GROUP_ORDER, THREAD_GROUPS, run_worker
from .report import CPU, Section, Target, num, table
from .services import LocalApiProcess, OtlpSink
from .stats import median, ratio

SETUPS = ("noop", "otlp", "otel-context", "otel-context-process")
WHAT = {
    "noop": "instrumentation + `BatchSpanProcessor(no-op exporter)`",
    "otlp": "+ the standard `OTLPSpanExporter` (HTTP protobuf, to a local sink)",
    "otel-context": "+ `ContextSpanExporter` (to the local Context API)",
    "otel-context-process": '+ `ContextSpanExporter(delivery="process")`: uploads in a helper process '
    "(app process only; the helper's CPU is shown apart)",
}
RATIO_GOAL = 0.5  # issue 25: the app pays at most half what the OTLP exporter costs it


@dataclass
class CpuRun:
    """CPU µs per call of each set-up, one value per round."""

    n: int
    rounds: int
    per_round: dict[str, list[float]] = field(default_factory=dict)
    delivered: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    by_thread: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # µs per call, to the last settle
    helper: dict[str, list[float]] = field(default_factory=dict)  # the delivery helper process's CPU µs per call

    def added(self, setup: str, round_no: int) -> float:
        return self.per_round[setup][round_no] - self.per_round["noop"][round_no]

    def ratios(self, setup: str = "otel-context", with_helper: bool = False) -> list[float]:
        done = min(len(values) for values in self.per_round.values())
        helper = self.helper.get(setup, [0.0] * done) if with_helper else [0.0] * done
        return [ratio(self.added(setup, r) + helper[r], self.added("otlp", r)) for r in range(done)]


def run(
    api: LocalApiProcess,
    sink: OtlpSink,
    *,
    n: int,
    warmup: int,
    rounds: int,
    log: Callable[[str], None] = print,
) -> CpuRun:
    result = CpuRun(n=n, rounds=rounds)
    for round_no in range(rounds):
        order = SETUPS if round_no % 2 == 0 else tuple(reversed(SETUPS))
        for setup in order:
            report = run_worker(setup, api.url, sink.url, n, warmup, [0.0])
            us = report["process_cpu_to_shutdown_s"] * 1e6 / n
            result.per_round.setdefault(setup, []).append(us)
            result.helper.setdefault(setup, []).append(report.get("helper_cpu_to_shutdown_s", 0.0) * 1e6 / n)
            result.delivered.setdefault(setup, []).append(report["delivered"])
            groups: dict[str, float] = {}
            for name, seconds in report["phases"][-1].get("cpu_s", {}).items():
                group = THREAD_GROUPS.get(name, "other")
                groups[group] = groups.get(group, 0.0) + seconds * 1e6 / n
            result.by_thread.setdefault(setup, []).append(groups)
            helper_us = result.helper[setup][-1]
            log(f"  round {round_no + 1}/{rounds} {setup:<20} {us:,.0f} µs CPU per call (+ helper {helper_us:,.0f})")
        log(
            f"  round {round_no + 1}/{rounds} ratio to OTLP {result.ratios()[-1]:.2f}; process delivery: "
            f"app {result.ratios('otel-context-process')[-1]:.2f}, "
            f"app + helper {result.ratios('otel-context-process', with_helper=True)[-1]:.2f}"
        )
    return result


def section(run: CpuRun) -> Section:
    rows = []
    for setup in SETUPS:
        values = run.per_round[setup]
        added = [run.added(setup, r) for r in range(run.rounds)]
        rows.append(
            (
                f"`{setup}`",
                WHAT[setup],
                num(median(values), 0),
                ", ".join(num(v, 0) for v in values),
                "—" if setup == "noop" else num(median(added), 0),
                num(median(run.helper.get(setup, [0.0])), 0) if setup == "otel-context-process" else "—",
            )
        )
    thread_rows = []
    for setup in SETUPS:
        rounds = run.by_thread.get(setup, [])
        thread_rows.append((f"`{setup}`", *(num(median([r.get(g, 0.0) for r in rounds]), 0) for g in GROUP_ORDER)))
    ratios = run.ratios()
    middle = median(ratios)
    delivered = run.delivered.get("otel-context", [])
    stored = sum(int(d.get("threads_stored", 0)) for d in delivered)  # type: ignore[call-overload]
    body = "\n\n".join(
        [
            f"{run.n:,} calls of the seed's company-name chain (4 spans a call) per set-up and round, "
            f"{run.rounds} round(s), each set-up in its own process; user + system CPU of the whole process "
            "from after the warm-up to after `provider.shutdown()` (`resource.getrusage`), divided by the calls.",
            table(
                ("set-up", "what", "CPU µs per call (median)", "per round", "added µs vs `noop`", "helper µs"),
                rows,
                "llrrrr",
            ),
            "By thread (per-thread CPU from `/proc`, median of rounds, up to the last settle, before shutdown):",
            table(("set-up", *GROUP_ORDER), thread_rows),
            f"otel-context's added CPU over the OTLP exporter's, per round: "
            f"{', '.join(num(r, 2) for r in ratios)} (median **{num(middle, 2)}**, goal ≤ {RATIO_GOAL:g}). "
            f"Threads stored by the local API in the otel-context runs: {stored:,}.",
            _budget_sentence(run),
            'With `delivery="process"`, per round, app process only: '
            f"{', '.join(num(r, 2) for r in run.ratios('otel-context-process'))} "
            f"(median **{num(median(run.ratios('otel-context-process')), 2)}**); app + helper: "
            f"{', '.join(num(r, 2) for r in run.ratios('otel-context-process', with_helper=True))} "
            f"(median **{num(median(run.ratios('otel-context-process', with_helper=True)), 2)}**).",
        ]
    )
    target = Target(
        "whole-process CPU added per call, otel-context / OTLP exporter",
        num(middle, 2),
        f"≤ {RATIO_GOAL:g}",
        middle <= RATIO_GOAL,
    )
    return Section(CPU, body, [target])


def _budget_sentence(run: CpuRun) -> str:
    """The goal as a budget in µs per call, against what the conversion thread alone costs the app."""
    otlp_added = median([run.added("otlp", r) for r in range(len(run.per_round["otlp"]))])
    budget = RATIO_GOAL * otlp_added
    converting = {
        setup: median([r.get("span processor", 0.0) for r in run.by_thread.get(setup, [])] or [0.0])
        for setup in ("otel-context", "otel-context-process")
    }
    verdict = (
        "conversion alone takes more than the whole budget, so no tuning of the uploads can meet the goal while "
        "spans are converted in the app's process"
        if min(converting.values()) > budget
        else "conversion alone fits in it"
    )
    return (
        f"The goal as a budget: {num(budget, 0)} µs per call ({RATIO_GOAL:g} × the {num(otlp_added, 0)} µs the OTLP "
        f"exporter adds). otel-context's span processor thread, which converts the spans, takes "
        f"{num(converting['otel-context'], 0)} µs per call ({num(converting['otel-context-process'], 0)} with "
        f'`delivery="process"`): {verdict}.'
    )
