"""`OTEL_EXPORTER_CONTEXT_DELIVERY=process`: uploads in a helper process, with every guarantee of the thread mode.

The app prepares; the helper (`python -m otel_context.helper_process`) delivers and acks. These run the real
app, helper and local API: the same threads as in thread mode, flushes that wait for the API, a helper
killed mid-run and restarted, faults retried, a bounded shutdown, forked workers with helpers of their own,
and the token kept out of the helper's argv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from otel_context.delivery.helper import HelperDelivery

from ..support.paths import REPO
from ..support.processes import app_env, run_app
from ..support.threads import TOKEN, read_threads, texts
from ..support.waiting import wait_for
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
    assert posts == stats["threads_uploaded"] + stats["threads_retried"]  # the helper's counters reached the app
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


def test_a_forked_child_delivers_through_its_own_helper(local_api, client):
    local_api.set_faults(latency_s=0.5)  # "parent 1" is still in the parent's helper at the fork
    result = run_app("fork_app", env=app_env(local_api, OTEL_EXPORTER_CONTEXT_DELIVERY="process"))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    child_flushed, child_stats = lines["child"].split(" ", 1)
    parent_flushed, parent_stats = lines["parent"].split(" ", 1)
    assert child_flushed == "True" and parent_flushed == "True"
    child, parent = json.loads(child_stats), json.loads(parent_stats)
    assert (child["threads_converted"], child["threads_uploaded"], child["threads_dropped"]) == (1, 1, 0)
    assert (parent["threads_uploaded"], parent["threads_dropped"]) == (2, 0)
    assert questions(client) == Counter(["parent 0", "parent 1", "child 0"])
    assert set(local_api.stats()["writes"].values()) == {1}  # no thread uploaded twice


GUNICORN = shutil.which("gunicorn", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed (pip install -e '.[test]')")
def test_gunicorn_preload_workers_deliver_through_helpers_of_their_own(local_api, client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [GUNICORN, "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "tests.apps.wsgi_app:application"],
        cwd=REPO,
        env=app_env(local_api, OTEL_EXPORTER_CONTEXT_DELIVERY="process"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: _ready(port), timeout=60), "gunicorn did not start"
        for n in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?q=request-{n}", timeout=10) as response:
                assert response.read() == b"answer to request-" + str(n).encode()
        helpers = _helpers_below(server.pid)
        delivered = wait_for(lambda: local_api.stats()["threads"] >= 22, timeout=60, interval=0.25)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert delivered, err[-5000:]
    assert len(helpers) == 3, helpers  # the master's (its preload run) and one per worker
    found = questions(client)
    preloads = [q for q in found if q.startswith("preload ")]
    assert len(preloads) == 1
    assert found == Counter([*(f"request-{n}" for n in range(20)), *preloads, "probe-ready"]), err[-3000:]
    assert set(local_api.stats()["writes"].values()) == {1}
    assert "Traceback" not in err, err[-3000:]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?q=probe-ready", timeout=2):
            return True
    except OSError:
        time.sleep(0.2)
        return False


def _helpers_below(root: int) -> list[int]:
    """Pids of helper processes among the descendants of `root`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                if b"otel_context.helper_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return found
