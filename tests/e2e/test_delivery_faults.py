"""Delivery on a bad day: the local Context API injects faults; nothing is lost, the app never waits."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ..support.paths import REPO
from ..support.threads import TOKEN, read_threads, texts
from ..support.waiting import wait_for

FAST_RETRY = {"retry_initial_s": 0.2, "retry_max_s": 1.0, "timeout": 5.0}


def chain():
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return prompt | FakeListChatModel(responses=["ok"]) | StrOutputParser()


def run_calls(app, first: int, count: int) -> list[float]:
    """Invoke the chain `count` times on this thread; the per-call latencies, in seconds."""
    runnable = chain()
    latencies = []
    for n in range(first, first + count):
        started = time.perf_counter()
        runnable.invoke({"q": f"question {n}"})
        latencies.append(time.perf_counter() - started)
    return latencies


def assert_each_arrived_once(client, expected: range) -> None:
    threads = read_threads(client)
    questions = Counter(texts(t)[0][2] for t in threads)
    assert sorted(questions) == sorted(f"question {n}" for n in expected)
    assert set(questions.values()) == {1}, "a thread arrived twice"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"latency_s": 2}, id="latency-2s"),
        pytest.param({"status": 500, "duration_s": 10}, id="500-for-10s"),
        pytest.param({"status": 429, "duration_s": 3, "retry_after": 1}, id="429-retry-after"),
        pytest.param({"reset_s": 3}, id="connection-resets"),
        pytest.param({"down_s": 20}, id="down-20s"),
        pytest.param({"lose_ack_s": 2}, id="stored-but-answer-lost"),
    ],
)
def test_every_thread_arrives_exactly_once_and_the_app_never_waits(make_app, local_api, client, fault):
    app = make_app(**FAST_RETRY)
    baseline = run_calls(app, 0, 20)  # no fault yet
    app.flush()
    local_api.set_faults(**fault)
    faulty = run_calls(app, 20, 20)
    app.processor.force_flush(100)  # spans handed to the exporter while the API misbehaves
    ratio = statistics.median(faulty) / statistics.median(baseline)
    assert ratio < 3, f"invoke() got {ratio:.1f}x slower while the API misbehaved"
    assert wait_for(lambda: app.exporter.stats()["threads_uploaded"] == 40, timeout=60), app.exporter.stats()
    stats = app.exporter.stats()
    assert stats["threads_dropped"] == 0 and stats["threads_rejected"] == 0
    if "latency_s" not in fault:
        assert stats["threads_retried"] > 0
    # Each attempt is at most one request: azure-core's own retry policy is off, so retries never multiply.
    posts = local_api.stats()["requests"]["POST /api/v1/log/conversation/thread"]
    assert stats["threads_uploaded"] <= posts <= stats["threads_uploaded"] + stats["threads_retried"]
    if "latency_s" in fault:  # every request is answered in time: one POST each
        assert posts == stats["threads_uploaded"]
    if "lose_ack_s" in fault or ("status" in fault and fault["status"] >= 500):  # may have been stored: read back
        assert stats["readbacks"] > 0
    if "lose_ack_s" in fault:  # stored, answer lost: found by the read-back, never sent again
        assert stats["readbacks_found"] > 0
    assert set(local_api.stats()["writes"].values()) == {1}  # one POST per thread: appends never repeated
    local_api.clear_faults()
    assert_each_arrived_once(client, range(40))


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"lose_ack_s": 3}, id="reset-after-the-append"),
        pytest.param({"stored_status": 502, "duration_s": 3}, id="502-after-the-append"),
        pytest.param({"stored_status": 504, "duration_s": 3}, id="504-after-the-append"),
        pytest.param({"stored_latency_s": 1.5}, id="answer-slower-than-the-timeout"),
    ],
)
def test_an_append_whose_answer_is_lost_is_read_back_not_sent_again(make_app, local_api, client, fault):
    """The API stored each upload, then the client could not learn it: each is found by a read-back."""
    app = make_app(retry_initial_s=0.2, retry_max_s=1.0, timeout=1.0)
    local_api.set_faults(**fault)
    run_calls(app, 0, 5)
    app.processor.force_flush(100)
    stats = app.exporter.stats
    assert wait_for(lambda: stats()["threads_uploaded"] == 5, timeout=30), stats()
    local_api.clear_faults()
    assert stats()["readbacks_found"] >= 1 and stats()["threads_unconfirmed"] == 0, stats()
    assert set(local_api.stats()["writes"].values()) == {1}  # never a second POST of a stored append
    assert_each_arrived_once(client, range(5))


def test_a_read_back_that_fails_never_sends_twice_and_is_counted(make_app, local_api, client):
    app = make_app(retry_initial_s=1.0, retry_max_s=1.0, max_elapsed_s=4.0)
    local_api.set_faults(lose_ack_s=10)  # every write is stored, its answer lost...
    run_calls(app, 0, 1)
    app.processor.force_flush(100)
    assert wait_for(lambda: local_api.store.count() == 1, timeout=10, interval=0.01)
    local_api.set_faults(down_s=10)  # ...and now nothing can be read back (the first read-back waits 0.5 s+)
    stats = app.exporter.stats
    assert wait_for(lambda: stats()["threads_unconfirmed"] == 1, timeout=20), stats()
    local_api.clear_faults()
    assert (stats()["threads_uploaded"], stats()["threads_dropped"]) == (0, 0)
    assert set(local_api.stats()["writes"].values()) == {1}
    assert_each_arrived_once(client, range(1))


def test_429_retry_after_is_honoured(make_app, local_api, client):
    app = make_app(retry_initial_s=0.05, retry_max_s=0.1)
    local_api.set_faults(status=429, duration_s=0.5, retry_after=1)
    started = time.monotonic()
    run_calls(app, 0, 1)
    app.flush()
    assert time.monotonic() - started >= 0.9  # our own backoff alone would have retried after ~0.1 s
    assert app.exporter.stats()["threads_uploaded"] == 1
    requests = local_api.stats()
    assert requests["responses"].get("429", 0) == 1, requests


def test_queue_full_drops_are_counted_and_memory_stays_bounded(make_app, local_api):
    app = make_app(queue_size=5, concurrency=1, batch_size=3, **FAST_RETRY)
    local_api.set_faults(latency_s=1)
    run_calls(app, 0, 100)
    app.processor.force_flush(100)
    stats = app.exporter.stats()
    assert stats["threads_converted"] == 100
    assert stats["threads_queued"] <= 5 + 3  # the bound, plus the ones in flight (one worker taking 3 at once)
    assert stats["threads_dropped"] >= 100 - 8
    local_api.clear_faults()
    assert wait_for(lambda: app.exporter.stats()["threads_queued"] == 0, timeout=20)
    assert app.exporter.stats()["threads_uploaded"] + app.exporter.stats()["threads_dropped"] == 100


def test_shutdown_reports_what_it_could_not_deliver(make_app, local_api):
    app = make_app(**FAST_RETRY)
    local_api.set_faults(down_s=30)
    run_calls(app, 0, 5)
    app.processor.force_flush(100)
    started = time.monotonic()
    app.exporter.shutdown(timeout_millis=1000)
    assert time.monotonic() - started < 8
    stats = app.exporter.stats()  # connections reset after the write: each may have been stored
    assert stats["threads_dropped"] + stats["threads_unconfirmed"] == 5 and stats["threads_uploaded"] == 0


def test_counters_are_readable_through_the_otel_metrics_api(make_app, client):
    app = make_app()
    reader = InMemoryMetricReader()
    app.exporter.counters.register_metrics(MeterProvider(metric_readers=[reader]))
    run_calls(app, 0, 3)
    app.flush()
    data = reader.get_metrics_data()
    points = {
        metric.name: metric.data.data_points[0].value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert points["otel_context.threads_uploaded"] == 3
    assert points["otel_context.threads_converted"] == 3
    assert points["otel_context.threads_queued"] == 0


SPOOL_APP = """
import sys, time
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from otel_context import ContextSpanExporter

exporter = ContextSpanExporter(register_metrics=False)
if sys.argv[1] == "app":
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=20000, max_export_batch_size=512))
    LangchainInstrumentor().instrument(tracer_provider=provider)
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | FakeListChatModel(responses=["ok"]) | StrOutputParser()
    for n in range(1000):
        chain.invoke({"q": f"question {n}"})
    provider.force_flush()
    print("queued", exporter.delivery.pending(), flush=True)
    time.sleep(600)
else:  # a restart: the spool is replayed at construction
    deadline = time.monotonic() + 60
    while exporter.delivery.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    print("left", exporter.delivery.pending(), "replayed", exporter.stats()["threads_replayed"], flush=True)
    exporter.shutdown()
"""


def test_sigkill_with_1000_queued_loses_nothing_with_a_spool(local_api, client, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(
        PYTHONPATH=str(REPO),
        OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
        OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
        OTEL_EXPORTER_CONTEXT_SPOOL_DIR=str(tmp_path / "spool"),
        OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF="1000",
    )
    local_api.set_faults(down_s=120)  # nothing can be delivered before the kill
    app = subprocess.Popen(
        [sys.executable, "-c", SPOOL_APP, "app"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = app.stdout.readline()
        assert line.split() == ["queued", "1000"], line
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    local_api.clear_faults()
    assert read_threads(client) == []
    cli = str(Path(sys.executable).with_name("otel-context"))
    backlog = subprocess.run([cli, "stats", "--spool", env["OTEL_EXPORTER_CONTEXT_SPOOL_DIR"]], capture_output=True)
    assert json.loads(backlog.stdout)["threads"] == 1000  # read without claiming: the restart replays them all
    restart = subprocess.run(
        [sys.executable, "-c", SPOOL_APP, "restart"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert restart.stdout.split() == ["left", "0", "replayed", "1000"], restart.stderr[-2000:]
    assert_each_arrived_once(client, range(1000))


def test_spooled_threads_whose_retries_ran_out_go_once_the_api_is_back(make_app, local_api, client, tmp_path):
    app = make_app(
        spool_dir=str(tmp_path / "spool"), max_elapsed_s=0.5, spool_retry_s=1.0, retry_initial_s=0.1, retry_max_s=0.2
    )
    local_api.set_faults(down_s=60)
    run_calls(app, 0, 3)
    app.processor.force_flush(100)
    stats = app.exporter.stats
    assert wait_for(lambda: stats()["threads_retried"] >= 3 and app.exporter.delivery.queue.idle(), timeout=10)
    assert (stats()["threads_uploaded"], stats()["threads_dropped"], stats()["threads_queued"]) == (0, 0, 3)
    local_api.clear_faults()  # the API is back; this process keeps running, no restart
    assert wait_for(lambda: stats()["threads_uploaded"] == 3, timeout=15), stats()
    assert stats()["threads_queued"] == 0
    assert_each_arrived_once(client, range(3))


def test_a_live_process_claims_the_spool_rows_of_a_killed_one(make_app, local_api, client, tmp_path):
    spool = str(tmp_path / "spool")
    survivor = make_app(spool_dir=spool, spool_retry_s=0.5)  # e.g. the other gunicorn worker
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(
        PYTHONPATH=str(REPO),
        OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
        OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
        OTEL_EXPORTER_CONTEXT_SPOOL_DIR=spool,
    )
    local_api.set_faults(down_s=120)
    app = subprocess.Popen(
        [sys.executable, "-c", SPOOL_APP, "app"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert app.stdout.readline().split() == ["queued", "1000"]
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    local_api.clear_faults()
    stats = survivor.exporter.stats
    assert wait_for(lambda: stats()["threads_uploaded"] == 1000, timeout=90), stats()
    assert_each_arrived_once(client, range(1000))
