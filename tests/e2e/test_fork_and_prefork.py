"""Pre-fork servers and `os.fork()`: each process delivers its own runs, and nothing is sent twice."""

from __future__ import annotations

import json
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

from ..support.paths import REPO
from ..support.processes import app_env, run_app
from ..support.threads import read_threads, texts
from ..support.waiting import wait_for

DELIVERY = pytest.mark.parametrize("delivery", ["thread", "process"])  # OTEL_EXPORTER_CONTEXT_DELIVERY


@DELIVERY
def test_a_forked_child_delivers_its_runs_and_the_parents_queue_is_sent_once(local_api, client, delivery):
    # "parent 1" is still queued or in flight at the fork (with `process`: in the parent's helper, and the
    # child starts a helper of its own)
    local_api.set_faults(latency_s=0.5)
    result = run_app("fork_app", env=app_env(local_api, OTEL_EXPORTER_CONTEXT_DELIVERY=delivery))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    child_flushed, child_stats = lines["child"].split(" ", 1)
    parent_flushed, parent_stats = lines["parent"].split(" ", 1)
    assert child_flushed == "True" and parent_flushed == "True"
    child, parent = json.loads(child_stats), json.loads(parent_stats)
    assert (child["threads_converted"], child["threads_uploaded"], child["threads_dropped"]) == (1, 1, 0)
    assert (parent["threads_uploaded"], parent["threads_dropped"]) == (2, 0)
    questions = Counter(texts(t)[0][2] for t in read_threads(client))
    assert questions == Counter(["parent 0", "parent 1", "child 0"])
    assert set(local_api.stats()["writes"].values()) == {1}  # no thread uploaded twice


GUNICORN = shutil.which("gunicorn", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed (pip install -e '.[test]')")
@DELIVERY
def test_gunicorn_preload_with_two_workers_delivers_every_request(local_api, client, delivery):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [GUNICORN, "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "tests.apps.wsgi_app:application"],
        cwd=REPO,
        env=app_env(local_api, OTEL_EXPORTER_CONTEXT_DELIVERY=delivery),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: set[str] = set()
    try:
        assert wait_for(lambda: _ready(port), timeout=60), "gunicorn did not start"
        for n in range(30):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?q=request-{n}", timeout=10) as response:
                assert response.read() == b"answer to request-" + str(n).encode()
                workers.add(response.headers["X-Worker"])
        expected = {f"request-{n}" for n in range(30)}
        stored = lambda: {texts(t)[0][2] for t in read_threads(client)}  # noqa: E731
        helpers = _helpers_below(server.pid)
        # 30 requests + the master's warm-up + the readiness probe, then what they are
        delivered = wait_for(lambda: local_api.stats()["threads"] >= 32, timeout=60, interval=0.25)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert delivered, (sorted(expected - stored()), err[-5000:])
    assert len(workers) == 2, f"requests were served by {workers}"
    # with `process`, a helper for the master (its preload run) and one per worker, started after the fork
    assert len(helpers) == (3 if delivery == "process" else 0), helpers
    questions = Counter(texts(t)[0][2] for t in read_threads(client))
    preloads = [q for q in questions if q.startswith("preload ")]
    assert len(preloads) == 1  # the master's own run, once: its forked workers never re-send it
    assert questions == Counter([*expected, *preloads, "probe-ready"]), err[-3000:]
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
