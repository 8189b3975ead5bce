"""`OTEL_EXPORTER_CONTEXT_DELIVERY=process`: uploads in a helper process, with every guarantee of the thread mode.

The app prepares; the helper (`python -m otel_context.helper_process`) delivers and acks. These run the real
app, helper and local API: the same threads as in thread mode, flushes that wait for the API, a helper
killed mid-run and restarted, faults retried, a bounded shutdown, forked workers with helpers of their own,
and the token kept out of the helper's argv.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from otel_context.delivery.helper import HelperDelivery

from ..support.processes import app_env, run_app
from ..support.threads import TOKEN, read_threads, texts
from .test_delivery_faults import FAST_RETRY, run_calls

DELIVERY_KEYS = ("threads_converted", "threads_uploaded", "threads_retried", "threads_rejected", "threads_dropped")


def questions(client) -> Counter:
    return Counter(texts(t)[0][2] for t in read_threads(client))


def helper_of(app) -> HelperDelivery:
    delivery = app.exporter.delivery
    assert isinstance(delivery, HelperDelivery) and delivery.fallback is None
    return delivery


def test_the_helper_delivers_the_same_threads_and_counts_as_the_thread_mode(make_app, local_api, client):
    stats = {}
    for mode in ("thread", "process"):
        app = make_app(delivery=mode)
        run_calls(app, 0, 30)
        app.flush()
        stats[mode] = {key: app.exporter.stats()[key] for key in DELIVERY_KEYS}
        assert stats[mode]["threads_uploaded"] == 30, (mode, app.exporter.stats())
        assert app.exporter.stats()["threads_queued"] == 0
        app.close()
    assert stats["process"] == stats["thread"]
    assert questions(client) == Counter({f"question {n}": 2 for n in range(30)})  # same ids would merge: two runs


def test_force_flush_returns_with_the_thread_stored(make_app, local_api, client):
    app = make_app(delivery="process")
    local_api.set_faults(latency_s=0.2)
    for n in range(3):
        run_calls(app, n, 1)
        app.flush()
        assert f"question {n}" in questions(client)  # stored before force_flush returned
    assert app.exporter.stats()["threads_uploaded"] == 3


def test_a_helper_killed_mid_run_is_restarted_and_every_thread_is_stored_once(make_app, local_api, client):
    app = make_app(delivery="process", concurrency=1, **FAST_RETRY)
    run_calls(app, 0, 1)
    app.flush()
    helper = helper_of(app)
    first = helper.helper_pid
    local_api.set_faults(latency_s=0.3)  # a backlog: items are queued and in flight in the helper
    run_calls(app, 1, 19)
    app.processor.force_flush(100)
    time.sleep(0.5)
    assert helper.pending() > 0
    os.kill(first, signal.SIGKILL)
    local_api.clear_faults()
    assert app.exporter.force_flush(30_000)
    assert helper.helper_pid != first and helper.restarts == 1
    assert questions(client) == Counter(f"question {n}" for n in range(20))
    stats = app.exporter.stats()
    assert stats["threads_dropped"] == 0 and stats["threads_queued"] == 0
    assert stats["threads_uploaded"] >= 20  # a thread delivered by the killed helper before its ack may count again


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 429, "duration_s": 2, "retry_after": 1}, id="429-retry-after"),
        pytest.param({"down_s": 3}, id="down-3s"),
    ],
)
def test_api_down_or_429_then_up_is_retried_and_delivered(make_app, local_api, client, fault):
    app = make_app(delivery="process", **FAST_RETRY)
    run_calls(app, 0, 1)
    app.flush()
    local_api.set_faults(**fault)
    run_calls(app, 1, 10)
    app.flush()
    stats = app.exporter.stats()
    assert stats["threads_uploaded"] == 11 and stats["threads_retried"] > 0 and stats["threads_dropped"] == 0
    posts = local_api.stats()["requests"]["POST /api/v1/log/conversation/thread"]
    # The helper's counters reached the app: each try is one request, but requests pipelined behind one
    # that found the API down never reached it.
    assert stats["threads_uploaded"] <= posts <= stats["threads_uploaded"] + stats["threads_retried"]
    if "status" in fault:
        assert posts == stats["threads_uploaded"] + stats["threads_retried"]
    local_api.clear_faults()
    assert questions(client) == Counter(f"question {n}" for n in range(11))


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_shutdown_with_the_api_unreachable_is_bounded_and_counts_what_is_left(make_app):
    app = make_app(delivery="process", endpoint=_closed_port(), **FAST_RETRY)
    run_calls(app, 0, 5)
    app.processor.force_flush(100)
    pid = helper_of(app).helper_pid
    started = time.monotonic()
    app.exporter.shutdown(timeout_millis=1000)
    assert time.monotonic() - started < 1 + 2.5
    assert app.exporter.stats()["threads_dropped"] == 5
    assert app.exporter.stats()["threads_queued"] == 0
    assert pid is not None and not Path(f"/proc/{pid}").exists()  # the helper is gone


def test_exit_with_the_api_unreachable_says_once_what_was_dropped():
    env = app_env(None, OTEL_EXPORTER_CONTEXT_ENDPOINT=_closed_port(), OTEL_EXPORTER_CONTEXT_DELIVERY="process")
    started = time.monotonic()
    result = run_app("exit_app", "3", env=env, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "not delivered at shutdown" in line]
    assert lines == ["otel-context: 3 thread(s) not delivered at shutdown were dropped (threads_dropped=3)"], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert took < 5 + 1 + 4, f"exit took {took:.1f} s"


def test_the_token_is_never_in_the_helpers_argv_or_environment(make_app):
    app = make_app(delivery="process")
    run_calls(app, 0, 1)
    app.flush()
    pid = helper_of(app).helper_pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"otel_context.helper_process" in cmdline
    assert TOKEN.encode() not in cmdline and TOKEN.encode() not in environ


def test_a_helper_that_cannot_start_falls_back_to_thread_mode_with_one_warning(make_app, client, monkeypatch, caplog):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    app = make_app(delivery="process")
    run_calls(app, 0, 3)
    app.flush()
    assert app.exporter.stats()["threads_uploaded"] == 3
    assert app.exporter.delivery.fallback is not None
    warnings = [r for r in caplog.records if "delivery helper process" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert questions(client) == Counter(f"question {n}" for n in range(3))
