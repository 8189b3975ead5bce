"""An app that waits on purpose: `force_flush()` delivers before it returns; an exit never hangs."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections import Counter

import pytest

from ..apps.common import chain
from ..support.processes import app_env, run_app, start_app
from ..support.threads import read_threads, texts


def test_serverless_invoke_then_force_flush_has_delivered_each_run(local_api, client):
    local_api.set_faults(latency_s=0.05)  # every upload takes 50 ms
    result = run_app("serverless", "12", env=app_env(local_api))
    assert result.returncode == 0, result.stderr[-3000:]
    rounds = [line.split() for line in result.stdout.splitlines()]
    assert len(rounds) == 12
    for n, flushed, stored, count, _took in rounds:
        assert (flushed, stored, count) == ("True", "True", str(int(n) + 1)), rounds
    questions = Counter(texts(t)[0][2] for t in read_threads(client))
    assert questions == Counter(f"question {n}" for n in range(12))


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("api", ["closed-port", "never-answers"])
def test_exit_with_the_api_unreachable_ends_within_5_s_and_says_what_was_dropped(api, request):
    endpoint = closed_port() if api == "closed-port" else request.getfixturevalue("silent_server")
    env = app_env(None, OTEL_EXPORTER_CONTEXT_ENDPOINT=endpoint)
    started = time.monotonic()
    result = run_app("exit_app", "3", env=env, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ran"
    lines = [line for line in result.stderr.splitlines() if "not delivered at shutdown" in line]
    if api == "closed-port":  # nothing was ever written: dropped
        assert lines == ["otel-context: 3 thread(s) not delivered at shutdown were dropped (threads_dropped=3)"], (
            result.stderr
        )
    else:  # written, never answered: those in flight may have been stored, so are not counted as drops
        (line,) = lines
        found = re.fullmatch(r"otel-context: 3 thread\(s\) not delivered at shutdown \(threads_dropped=(\d); "
                             r"threads_unconfirmed=(\d): an earlier try may have stored them, so they are not sent "
                             r"again\)", line)  # fmt: skip
        assert found and int(found[1]) + int(found[2]) == 3 and int(found[2]) >= 1, line
    assert "Traceback" not in result.stderr
    assert took < 5 + 4, f"exit took {took:.1f} s"  # the 5 s bound plus interpreter start and imports


@pytest.fixture
def ctrl_c_interrupts():
    """SIGINT raises KeyboardInterrupt in this process, and its children start with it at its default, as at
    a terminal: a shell without job control starts a background job (`.ci/run &`) with SIGINT ignored, and
    an ignored signal stays ignored in every child, so Ctrl-C would never reach the app under test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_ctrl_c_during_a_long_shutdown_exits_quietly():
    env = app_env(None, OTEL_EXPORTER_CONTEXT_ENDPOINT=closed_port(), OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT="60000")
    app = start_app("exit_app", "2", env=env)
    try:
        assert app.stdout.readline().strip() == "ran"
        time.sleep(1.0)  # now in the shutdown at exit, retrying against the closed port
        app.send_signal(signal.SIGINT)
        _, err = app.communicate(timeout=10)
    finally:
        app.kill()
    assert "Traceback" not in err, err
    assert "otel-context: shutdown interrupted" in err or "not delivered at shutdown" in err, err


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_ctrl_c_while_the_shutdown_builds_the_last_runs_stops_it_at_once(make_app, monkeypatch, otel_logs):
    """Ctrl-C can land before the shutdown waits on the uploads: while it builds the runs still pending. It
    must stop the shutdown then too, not after its timeout (60 s here) with the API unreachable."""
    app = make_app(endpoint=closed_port(), shutdown_timeout_s=60.0)
    chain("hello").invoke({"question": "one run, queued and never delivered"})
    app.processor.force_flush(500)  # the spans are exported; the run's upload is refused and retried
    pipeline = app.exporter.pipeline
    assert pipeline.counters.get("threads_converted") == 1
    drain = pipeline.buffer.drain

    def drain_then_ctrl_c():
        built = drain()
        signal.raise_signal(signal.SIGINT)  # as Python takes a Ctrl-C: KeyboardInterrupt at the next bytecode
        return built

    monkeypatch.setattr(pipeline.buffer, "drain", drain_then_ctrl_c)
    started = time.monotonic()
    app.close()  # the processor's shutdown, then the exporter's, in this (the main) thread
    took = time.monotonic() - started
    assert took < 5, f"the shutdown went on {took:.1f} s after Ctrl-C"
    assert "otel-context: shutdown interrupted" in otel_logs.text
    assert pipeline.counters.get("threads_dropped") == 1  # counted, as every drop is
