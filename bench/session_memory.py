"""The app's memory over long sessions: RSS of a LangChain app running many session turns, exporting with
otel-context (in process, the in-memory session book) and with the standard OTLP/HTTP exporter.

    python -m bench.session_memory [--turns 20000] [--sessions 500]

Each set-up runs in its own process against its own server (the local Context API, a trivial OTLP
sink), side by side in one run. RSS is read from /proc after a warm-up of a tenth of the turns and at
the end: a book that kept every turn's content would grow with the turns; one that keeps where each
turn went stays flat.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from typing import Any

from .memory import proc_status_kib
from .services import TOKEN, LocalApiProcess, OtlpSink

SETUPS = ("otel-context", "otlp")


def measure(setup: str, url: str, turns: int, sessions: int) -> dict[str, Any]:
    """In the worker: run `turns` turns spread over `sessions` sessions; RSS after warm-up and at the end."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if setup == "otel-context":
        from otel_context import ContextSpanExporter

        exporter: Any = ContextSpanExporter(endpoint=url, token=TOKEN, register_metrics=False)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=20_000))
    LangchainInstrumentor().instrument(tracer_provider=provider)
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = prompt | FakeListChatModel(responses=["A short answer of a few words."]) | StrOutputParser()
    warmup = turns // 10
    readings: dict[str, int] = {}
    for n in range(turns):
        session = f"session-{n % sessions}"
        chain.invoke({"question": f"question {n} of {session}"}, config={"metadata": {"session_id": session}})
        if n + 1 == warmup:
            provider.force_flush()
            gc.collect()
            readings["warm_kib"] = proc_status_kib("VmRSS")
    provider.force_flush()
    gc.collect()
    readings["end_kib"] = proc_status_kib("VmRSS")
    readings["peak_kib"] = proc_status_kib("VmHWM")
    provider.shutdown()
    return readings


def run(turns: int, sessions: int) -> dict[str, dict[str, Any]]:
    """Both set-ups, each in a process of its own; their readings by set-up."""
    out: dict[str, dict[str, Any]] = {}
    with LocalApiProcess() as api, OtlpSink() as sink:
        for setup in SETUPS:
            url = api.url if setup == "otel-context" else sink.url
            command = [sys.executable, "-m", "bench.session_memory", "--worker", setup, url]
            command += ["--turns", str(turns), "--sessions", str(sessions)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            out[setup] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.session_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--worker", nargs=2, metavar=("SETUP", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.turns, args.sessions)))
        return 0
    results = run(args.turns, args.sessions)
    print(f"{args.turns} turns over {args.sessions} sessions, RSS in MB:")
    print("| set-up | after warm-up | at the end | growth | peak |")
    print("|---|---|---|---|---|")
    for setup, r in results.items():
        warm, end = r["warm_kib"] / 1024, r["end_kib"] / 1024
        print(f"| {setup} | {warm:.1f} | {end:.1f} | {end - warm:+.1f} | {r['peak_kib'] / 1024:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
