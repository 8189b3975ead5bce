"""A session continued by another process: never lost or appended twice; with a shared book, one thread."""

from __future__ import annotations

import subprocess
import sys
import time
from subprocess import PIPE

from ..support.processes import app_env, run_app, start_app
from ..support.threads import read_threads


def turns_of(thread) -> list[str]:
    return [m.message for m in thread.messages]


def pairs(*labels: str) -> list[str]:
    return [text for label in labels for text in (f"question {label}", f"answer {label}")]


def test_default_book_a_restarted_process_continues_in_a_thread_of_its_own(local_api, client):
    env = app_env(local_api)
    for labels in (["1", "2"], ["3", "4"]):  # a restart between turns 2 and 3
        result = run_app("sessions", "s-restart", *labels, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    threads = read_threads(client)
    assert sorted(turns_of(t) for t in threads) == [pairs("1", "2"), pairs("3", "4")]  # none lost, none twice
    assert {t.metadata["session_id"] for t in threads} == {"s-restart"}


def test_shared_book_two_successive_processes_make_one_thread(local_api, client, tmp_path):
    env = app_env(local_api, OTEL_EXPORTER_CONTEXT_SESSION_DB=str(tmp_path / "sessions.db"))
    for labels in (["1", "2"], ["3", "4"]):
        result = run_app("sessions", "s-shared", *labels, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    (thread,) = read_threads(client)
    assert turns_of(thread) == pairs("1", "2", "3", "4")


def turns_taken_at_once(local_api, client, tmp_path, session: str, session_db: str):
    """Two live processes add six turns each to one session at the same moment (uploads slowed so they
    overlap: a slower stale one must not win); the one thread they make holds every turn, each
    process's in the order they ran, each answer after its question. Returns that thread."""
    local_api.set_faults(latency_s=0.03)
    env = app_env(local_api, OTEL_EXPORTER_CONTEXT_SESSION_DB=session_db)
    go = tmp_path / "go"
    odd = [f"a{n}" for n in range(6)]
    even = [f"b{n}" for n in range(6)]
    apps = [start_app("sessions", session, *labels, "--wait-for", str(go), env=env) for labels in (odd, even)]
    time.sleep(2.0)  # both processes are up and waiting
    go.touch()
    for app in apps:
        _, err = app.communicate(timeout=120)
        assert app.returncode == 0, err[-3000:]
    (thread,) = read_threads(client)
    texts = turns_of(thread)
    assert sorted(texts) == sorted(pairs(*odd, *even))  # every turn of both processes, each once
    for labels in (odd, even):
        positions = [texts.index(f"question {label}") for label in labels]
        assert positions == sorted(positions)
        assert all(texts[p + 1] == f"answer {label}" for p, label in zip(positions, labels, strict=True))
    return thread


def test_shared_book_two_live_processes_taking_turns_at_once_lose_nothing(local_api, client, tmp_path):
    turns_taken_at_once(local_api, client, tmp_path, "s-live", str(tmp_path / "sessions.db"))


OPEN_AT_ONCE = """
import os, sys, time
from otel_context.delivery.spool import Spool
from otel_context.preparation.session_sqlite import SqliteSessions
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
SqliteSessions(sys.argv[2]).close()
Spool(sys.argv[3], 1 << 20).close()
"""


def test_processes_opening_a_new_book_and_spool_at_the_same_instant_all_start(tmp_path):
    # Two gunicorn workers starting together once got "database is locked" from `journal_mode=WAL`.
    go, book, spool = tmp_path / "go", tmp_path / "sessions.db", tmp_path / "spool"
    env = app_env(None)
    apps = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(go), str(book), str(spool)], env=env, stderr=PIPE)
        for _ in range(8)
    ]
    time.sleep(1.5)  # all are up, polling for the go file
    go.touch()
    for app in apps:
        _, err = app.communicate(timeout=60)
        assert app.returncode == 0, err.decode()[-2000:]
