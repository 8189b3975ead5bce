"""One set-up of the app-overhead benchmark, in its own process.

    python -m bench.overhead_worker SETUP API_URL N [--sink URL] [--token T] [--warmup W] [--latencies 0,0.02]

Builds the set-up, then for each latency (applied to the local Context API and the OTLP sink through
their fault mode) warms up, times N `invoke()` calls of the seed's company-name chain on this thread
with `time.perf_counter_ns`, and lets background work drain before the next phase (untimed). Prints
one JSON object: per-phase latencies in ns, and what the set-up delivered.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import resource
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .machine import pid_cpu_s
from .services import TOKEN, http_json, set_latency

SETUPS = ("none", "none-llmchain", "legacy", "noop", "otel-context", "otel-context-process", "otlp")
INPUT = {"product": "colorful socks"}


@dataclass
class SetUp:
    """The chain to call, how to settle background work, and how to tear the set-up down."""

    call: Callable[[], object]
    settle: Callable[[], None] = lambda: None
    shutdown: Callable[[], None] = lambda: None
    report: Callable[[], dict[str, Any]] = dict
    notes: dict[str, Any] = field(default_factory=dict)
    helper_cpu: Callable[[], float] | None = None  # CPU seconds so far of a live delivery helper process


class _CountingExporter:
    """The `noop` set-up's exporter: does nothing but count (the instrumentation's own cost)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        outer = self

        class Exporter(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                outer.spans += len(spans)
                return SpanExportResult.SUCCESS

        self.spans = 0
        self.exporter = Exporter()


def _bearer_policy(token: str) -> Any:
    """An azure-core policy adding `Authorization: Bearer` (its own policy refuses tokens over plain http)."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class BearerOverHttp(SansIOHTTPPolicy):  # type: ignore[misc]
        def on_request(self, request: Any) -> None:
            request.http_request.headers["Authorization"] = f"Bearer {token}"

    return BearerOverHttp()


def _threads(api_url: str, token: str) -> int:
    return int(http_json(f"{api_url}/healthz", token=token)["threads"])


def _instrumented(exporter: Any) -> tuple[Any, Callable[[], object]]:
    """A TracerProvider with `BatchSpanProcessor(exporter)`, LangChain instrumented into it, the LCEL chain."""
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .apps import company_chain

    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    LangchainInstrumentor().instrument(tracer_provider=provider)
    chain = company_chain()
    return provider, lambda: chain.invoke(INPUT)


def build(setup: str, api_url: str, sink_url: str, token: str) -> SetUp:
    from .apps import company_chain, legacy_chain

    if setup == "none":
        chain = company_chain()
        return SetUp(lambda: chain.invoke(INPUT))
    if setup == "none-llmchain":
        chain = legacy_chain()
        return SetUp(lambda: chain.invoke(INPUT))
    if setup == "legacy":
        return _legacy(api_url, token)
    if setup == "noop":
        counting = _CountingExporter()
        provider, call = _instrumented(counting.exporter)
        return SetUp(
            call,
            settle=lambda: provider.force_flush(),
            shutdown=provider.shutdown,
            report=lambda: {"spans_exported": counting.spans},
        )
    if setup in ("otel-context", "otel-context-process"):
        from otel_context import ContextSpanExporter

        delivery = "process" if setup == "otel-context-process" else "thread"
        exporter = ContextSpanExporter(endpoint=api_url, token=token, delivery=delivery)
        provider, call = _instrumented(exporter)
        before = _threads(api_url, token)

        def settle() -> None:
            provider.force_flush()
            exporter.force_flush(120_000)

        def report() -> dict[str, Any]:
            stats = exporter.stats()
            keys = ("spans_received", "threads_converted", "threads_uploaded", "threads_retried", "threads_dropped")
            out = {key: stats[key] for key in keys}
            out["threads_stored"] = _threads(api_url, token) - before
            return out

        def helper_cpu() -> float:
            pid = exporter.delivery.helper_pid  # type: ignore[union-attr]
            return pid_cpu_s(pid) if pid is not None else 0.0

        helper = helper_cpu if delivery == "process" else None
        return SetUp(call, settle=settle, shutdown=provider.shutdown, report=report, helper_cpu=helper)
    if setup == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider, call = _instrumented(OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces"))
        before = http_json(f"{sink_url}/_admin/stats", token=token)["spans"]
        return SetUp(
            call,
            settle=lambda: provider.force_flush(),
            shutdown=provider.shutdown,
            report=lambda: {
                "spans_received_by_sink": http_json(f"{sink_url}/_admin/stats", token=token)["spans"] - before
            },
        )
    raise SystemExit(f"unknown set-up {setup!r}; expected one of {', '.join(SETUPS)}")


def _legacy(api_url: str, token: str) -> SetUp:
    """LangChain's old `ContextCallbackHandler`, as the seed used it, its client pointed at the local API."""
    from getcontext import ContextAPI
    from getcontext.token import Credential
    from langchain_community.callbacks.context_callback import ContextCallbackHandler

    from .apps import company_chain, legacy_chain

    handler = ContextCallbackHandler(token)
    handler.client = ContextAPI(
        credential=Credential(token), endpoint=api_url, authentication_policy=_bearer_policy(token)
    )
    chain = legacy_chain([handler])
    before = _threads(api_url, token)
    notes: dict[str, Any] = {}

    def shutdown() -> None:
        notes.update(_legacy_on_lcel(handler, company_chain(), api_url, token))
        handler.client.close()

    def report() -> dict[str, Any]:
        return {"threads_stored": _threads(api_url, token) - before, **notes}

    return SetUp(lambda: chain.invoke(INPUT), shutdown=shutdown, report=report)


def _legacy_on_lcel(handler: Any, chain: Any, api_url: str, token: str) -> dict[str, Any]:
    """What the old handler does with the LCEL version of the same chain: count its callback errors."""
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    collector = Collect(logging.WARNING)
    manager_logger = logging.getLogger("langchain_core.callbacks.manager")
    manager_logger.addHandler(collector)
    level = manager_logger.level
    manager_logger.setLevel(logging.WARNING)  # the worker's root logger shows errors only
    before = _threads(api_url, token)
    try:
        answer = chain.invoke(INPUT, config={"callbacks": [handler]})
    finally:
        manager_logger.removeHandler(collector)
        manager_logger.setLevel(level)
    return {
        "lcel_answer": answer,
        "lcel_callback_errors": len(errors),
        "lcel_first_error": errors[0] if errors else "",
        "lcel_threads_stored": _threads(api_url, token) - before,
    }


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) so far of each live thread, by thread name without its number."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        name = "app thread" if thread is threading.main_thread() else re.sub(r"[-_]?\d+$", "", thread.name)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def children_cpu_s() -> float:
    """User + system CPU seconds of the child processes that ended and were waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s() -> float:
    """User + system CPU seconds of the whole process so far (every thread, live or ended)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup = build(args.setup, args.api_url, args.sink, args.token)
    phases = []
    process_before = 0.0
    for latency in args.latencies:
        set_latency(args.api_url, latency, args.token)
        if args.sink:
            set_latency(args.sink, latency, args.token)
        for _ in range(args.warmup):
            setup.call()
        setup.settle()
        gc.collect()
        cpu_before = thread_cpu_s()
        process_before = process_cpu_s()
        helper_before = (setup.helper_cpu() + children_cpu_s()) if setup.helper_cpu else 0.0
        samples = []
        clock = time.perf_counter_ns
        call = setup.call
        started = clock()
        for _ in range(args.n):
            t0 = clock()
            call()
            samples.append(clock() - t0)
        elapsed = clock() - started
        settle_started = time.perf_counter()
        setup.settle()  # untimed: background export and delivery finish before the next phase
        cpu_after = thread_cpu_s()
        process_after = process_cpu_s()
        cpu = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 3) for name in cpu_after}
        phases.append(
            {
                "latency_s": latency,
                "ns": samples,
                "wall_ns": elapsed,
                "settle_s": round(time.perf_counter() - settle_started, 3),
                "cpu_s": cpu,
                "process_cpu_s": round(process_after - process_before, 4),
            }
        )
    setup.shutdown()  # provider.shutdown(): outside every timed loop
    # The whole process's CPU from the last phase's start (after its warm-up) to after shutdown: what the
    # app pays for the set-up, background threads included.
    process_to_shutdown = process_cpu_s() - process_before
    # The helper's CPU over the same span: it is reaped at shutdown, so its total is in RUSAGE_CHILDREN.
    helper_to_shutdown = children_cpu_s() - helper_before if setup.helper_cpu else 0.0
    set_latency(args.api_url, 0, args.token)
    if args.sink:
        set_latency(args.sink, 0, args.token)
    return {
        "setup": args.setup,
        "n": args.n,
        "warmup": args.warmup,
        "phases": phases,
        "process_cpu_to_shutdown_s": round(process_to_shutdown, 4),
        "helper_cpu_to_shutdown_s": round(helper_to_shutdown, 4),
        "delivered": setup.report(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead_worker", description=__doc__.splitlines()[0])
    parser.add_argument("setup", choices=SETUPS)
    parser.add_argument("api_url")
    parser.add_argument("n", type=int)
    parser.add_argument("--sink", default="", help="the OTLP sink's base URL (for the otlp set-up)")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--latencies", type=lambda text: [float(x) for x in text.split(",")], default=[0.0, 0.02], help="seconds"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    result = run(parse_args(argv))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
