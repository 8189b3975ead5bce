"""`serve --workers 2` with a spool: a worker killed with SIGKILL under load loses no acknowledged span.

Every request holds the spans of ten traces, which both workers own some of, so each worker passes
the other the spans of its traces on every request. A worker is killed (SIGKILL) while the clients'
requests are being acknowledged: the supervisor starts a worker in its place, which replays what its
write-ahead log held, while the clients carry on (reconnecting); or every process is killed and
`serve` starts again on the same directories. Every acknowledged trace must reach the local Context
API as one thread with its two messages: the API appends, so a trace stored twice would show as two
threads or as doubled messages.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_context.receiver.routing import TraceRouter

from ..support.sidecar import Process, clean_env, free_port
from ..support.threads import TOKEN
from ..support.waiting import wait_for
from .test_sidecar_durability import company_chain, make_requests, one_trace_id, product, stored

CLIENTS = 4
TRACES = 8000


def serve_workers(local_api, tmp_path: Path, port: int) -> tuple[Process, list[int]]:
    """`serve --workers 2` on `port` with a spool; the process and its workers' pids."""
    command = [sys.executable, "-m", "otel_context.cli", "serve", "--workers", "2", "--port", str(port)]
    command += ["--grpc-port", "-1", "--settle-ms", "1000", "--endpoint", local_api.url]
    command += ["--spool-dir", str(tmp_path / "spool"), "--state-dir", str(tmp_path / "state")]
    env = clean_env(
        OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
        OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF="100",
        OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF="500",
    )
    supervisor = Process(command, env)  # the workers' replay lines may come before the supervisor's
    ready = r"otel-context serve: 2 workers \(pids ([0-9, ]+)\)"
    assert wait_for(lambda: re.search(ready, supervisor.text()), timeout=60), supervisor.text()[-3000:]
    return supervisor, [int(p) for p in re.search(ready, supervisor.text()).group(1).split(", ")]


class Load:
    """`CLIENTS` clients posting every request once, each on one connection at a time (the kernel
    picks its worker), a new one when its worker dies; what was answered 200 is `acknowledged`."""

    def __init__(self, requests: list[tuple[bytes, list[int]]], port: int) -> None:
        self.port = port
        self.acknowledged: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = [threading.Thread(target=self._client, args=(requests[i::CLIENTS],)) for i in range(CLIENTS)]
        for thread in self._clients:
            thread.start()

    def _client(self, mine: list[tuple[bytes, list[int]]]) -> None:
        connection = None
        for body, numbers in mine:
            if self._stop.is_set():
                break
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):  # its worker was killed: not acknowledged
                if connection is not None:
                    connection.close()
                connection = None
                continue
            if response.status == 200:
                with self._lock:
                    self.acknowledged.extend(numbers)
        if connection is not None:
            connection.close()

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def stop(self) -> set[int]:
        self._stop.set()
        for thread in self._clients:
            thread.join(60)
        acked = set(self.acknowledged)
        assert len(acked) < TRACES, "the load ended before the kill: the test proved nothing"
        return acked


def assert_stored_once(local_api, acked: set[int], log: str) -> None:
    assert "Traceback" not in log, log[-5000:]
    by_trace = stored(local_api)
    assert set(by_trace) <= set(range(TRACES))
    duplicated = {n: len(threads) for n, threads in by_trace.items() if len(threads) > 1}
    assert not duplicated, f"traces stored as more than one thread: {duplicated}"
    for number in acked:
        (thread,) = by_trace[number]
        assert [(m.get("role"), m.get("message")) for m in thread["messages"]] == [
            ("user", product(number)),
            ("assistant", "Rainbow Threads"),
        ], f"trace {number} stored with its messages more than once"


def wait_until_stored(local_api, acked: set[int]) -> None:
    assert wait_for(lambda: acked <= set(stored(local_api)), timeout=90), (
        f"acknowledged but missing: {len(acked - set(stored(local_api)))} of {len(acked)}"
    )
    time.sleep(2)  # past the settle time: whatever else is built arrives


def test_a_worker_killed_under_load_and_replaced_loses_no_acknowledged_trace(capture, local_api, tmp_path):
    requests = make_requests(encode_spans(capture(company_chain)), TRACES)
    router = TraceRouter(1, 2, "/nonexistent")
    assert {router.owner(one_trace_id(n)) for n in range(10)} == {1, 2}  # each request is split
    port = free_port()
    supervisor, pids = serve_workers(local_api, tmp_path, port)
    try:
        load = Load(requests, port)
        assert wait_for(lambda: load.count() >= 2000, timeout=120, interval=0.01)
        os.kill(pids[1], signal.SIGKILL)  # worker 2, while requests are being acknowledged
        assert len(stored(local_api)) < load.count(), "everything was delivered before the kill: nothing at risk"
        # the clients carry on through the restart: worker 1 takes worker 2's parts itself meanwhile
        assert wait_for(lambda: "worker 2 restarted" in supervisor.text(), timeout=60), supervisor.text()[-3000:]
        restarted_at = load.count()
        assert wait_for(lambda: load.count() >= restarted_at + 500, timeout=60, interval=0.01)
        acked = load.stop()
        wait_until_stored(local_api, acked)
    finally:
        log = supervisor.stop()
    assert supervisor.proc.returncode == 0, log[-3000:]
    assert_stored_once(local_api, acked, log)


def test_every_process_killed_under_load_then_serve_restarted_loses_no_acknowledged_trace(capture, local_api, tmp_path):
    """The new workers claim the dead workers' write-ahead logs, whichever index wrote them, and replay them."""
    requests = make_requests(encode_spans(capture(company_chain)), TRACES)
    port = free_port()
    first, pids = serve_workers(local_api, tmp_path, port)
    try:
        load = Load(requests, port)
        assert wait_for(lambda: load.count() >= 2000, timeout=120, interval=0.01)
        for pid in pids:  # the workers, then the supervisor before it can restart them (0.5 s)
            os.kill(pid, signal.SIGKILL)
        first.proc.send_signal(signal.SIGKILL)
        acked = load.stop()
        assert len(stored(local_api)) < len(acked), "everything was delivered before the kill: nothing at risk"
    finally:
        first.stop()
    second, _ = serve_workers(local_api, tmp_path, free_port())
    try:
        wait_until_stored(local_api, acked)
    finally:
        log = second.stop()
    assert second.proc.returncode == 0, log[-3000:]
    assert "replayed" in log
    assert_stored_once(local_api, acked, log)
