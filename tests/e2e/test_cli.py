"""The `otel-context` command as a newcomer meets it, against real ports, servers and processes: one-line
errors of `serve` and `stats`, `threads` against a local API, `local-api` printing its page."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from ..support.cli import one_line_error, run_cli
from ..support.paths import REPO
from ..support.threads import TOKEN
from .test_local_api import chat, write


@pytest.fixture
def listening_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_on_a_port_in_use_says_so_and_leaves_nothing_behind(tmp_path, listening_port):
    # A subprocess, as a user runs it: the one line, the exit status, and no ./otel-context-state.
    command = [sys.executable, "-m", "otel_context.cli", "serve", "--port", str(listening_port)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    one_line_error(result.returncode, result.stderr, f"127.0.0.1:{listening_port}", "in use", "--port")
    assert list(tmp_path.iterdir()) == []


def test_serve_with_its_grpc_port_in_use(capsys, tmp_path, listening_port, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "serve", "--port", "0", "--grpc-port", str(listening_port))
    one_line_error(code, err, "OTLP/gRPC", "--grpc-port")
    assert list(tmp_path.iterdir()) == []


def test_stats_against_a_closed_port(capsys):
    port = closed_port()
    code, _, err = run_cli(capsys, "stats", "--url", f"http://127.0.0.1:{port}")
    one_line_error(code, err, "otel-context stats: cannot reach", str(port), "refused")


def test_stats_against_a_sidecar_that_needs_a_token(capsys, tmp_path, local_api, monkeypatch):
    monkeypatch.delenv("OTEL_CONTEXT_SERVE_TOKEN", raising=False)
    receiver = resolve_receiver_settings(port=0, grpc_port=-1, token="sidecar-secret", state_dir=str(tmp_path))
    delivery = resolve_settings(endpoint=local_api.url, token=TOKEN)
    with SidecarThread(receiver, delivery) as sidecar:
        code, _, err = run_cli(capsys, "stats", "--url", sidecar.http_url)
        one_line_error(code, err, "HTTP 401", "--token")
        code, out, _ = run_cli(capsys, "stats", "--url", sidecar.http_url, "--token", "sidecar-secret")
        assert code == 0
        assert "threads_uploaded" in json.loads(out)["counters"]


@pytest.fixture
def stored(local_api, client) -> str:
    write(client, chat("t-1", "first question", user_id="u-1", session_id="s-1", started_at="2026-01-01T12:00:00Z"))
    write(client, chat("t-2", "second question", user_id="u-2", session_id="s-2", started_at="2026-01-02T12:00:00Z"))
    write(client, chat("t-3", "third question", user_id="u-1", session_id="s-3", started_at="2026-01-03T12:00:00Z"))
    return local_api.url


def test_threads_lists_as_a_table_and_filters(capsys, stored, monkeypatch):
    monkeypatch.setenv("CONTEXT_API_TOKEN", TOKEN)
    code, out, _ = run_cli(capsys, "threads", "--endpoint", stored)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["id", "started", "user"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["t-1", "t-2", "t-3"]
    _, out, _ = run_cli(capsys, "threads", "--endpoint", stored, "--user", "u-1")
    assert sorted(line.split()[0] for line in out.strip().splitlines()[1:]) == ["t-1", "t-3"]
    _, out, _ = run_cli(capsys, "threads", "--endpoint", stored, "--session", "s-2", "--json")
    assert [t["id"] for t in json.loads(out)] == ["t-2"]
    _, out, _ = run_cli(capsys, "threads", "--endpoint", stored, "--since", "1h", "--user", "nobody")
    assert out.strip() == "no threads"


def test_threads_shows_one(capsys, stored):
    code, out, _ = run_cli(capsys, "threads", "t-2", "--endpoint", stored, "--token", TOKEN)
    assert code == 0
    assert "user       second question" in out
    assert "tool       orders.lookup" in out
    assert "assistant  It ships on Monday." in out
    _, out, _ = run_cli(capsys, "threads", "t-2", "--endpoint", stored, "--token", TOKEN, "--json")
    assert json.loads(out)["metadata"]["user_id"] == "u-2"


def test_threads_errors_are_one_line(capsys, stored):
    code, _, err = run_cli(capsys, "threads", "--endpoint", stored, "--token", "wrong")
    one_line_error(code, err, "HTTP 401", "refused")
    code, _, err = run_cli(capsys, "threads", "missing", "--endpoint", stored, "--token", TOKEN)
    one_line_error(code, err, "no thread missing")
    code, _, err = run_cli(capsys, "threads", "--endpoint", f"http://127.0.0.1:{closed_port()}")
    one_line_error(code, err, "cannot reach")
    code, _, err = run_cli(capsys, "threads", "--endpoint", stored, "--since", "yesterday")
    one_line_error(code, err, "--since")


@pytest.mark.timeout(60)
def test_local_api_prints_its_page(tmp_path: Path):
    command = [sys.executable, "-m", "otel_context.cli", "local-api", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as server:
        try:
            listening = server.stdout.readline()
            page = server.stdout.readline()
        finally:
            server.terminate()
            server.wait(10)
    url = listening.rsplit(" ", 1)[1].strip()
    assert page.strip().endswith(url + "/")


WITHOUT = (  # the command line in an interpreter where the named modules cannot be imported (None in sys.modules)
    "import sys; blocked, argv = sys.argv[1].split(','), sys.argv[2:]; "
    "sys.modules.update(dict.fromkeys(blocked)); "
    "from otel_context.cli import main; sys.exit(main(argv))"
)


@pytest.mark.parametrize(
    ("blocked", "argv", "line"),
    [
        (
            "grpc",
            ["serve", "--port", "0"],
            "otel-context serve needs the 'sidecar' extra (grpc is not installed): pip install 'otel-context[sidecar]'",
        ),
        (
            "opentelemetry.proto",
            ["serve", "--port", "0"],
            "otel-context serve needs the 'sidecar' extra (opentelemetry.proto is not installed): "
            "pip install 'otel-context[sidecar]'",
        ),
        (
            "aiohttp",
            ["local-api", "--port", "0"],
            "otel-context local-api needs the 'local' extra (aiohttp is not installed): "
            "pip install 'otel-context[local]'",
        ),
        (
            "aiohttp",
            ["demo"],
            "otel-context demo needs the 'local' extra (aiohttp is not installed): pip install 'otel-context[local]'",
        ),
    ],
    ids=["serve-without-grpc", "serve-without-proto", "local-api-without-aiohttp", "demo-without-aiohttp"],
)
def test_a_command_whose_extra_is_missing_names_it_in_one_line(tmp_path, blocked, argv, line):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}  # no token: the demo
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-c", WITHOUT, blocked, *argv]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_works_without_the_servers_extras():
    # --help builds every subcommand's parser (local-api's included) without aiohttp, grpc or protobuf.
    blocked = "aiohttp,grpc,google.protobuf,opentelemetry.proto"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT, blocked, "local-api", "--help"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "--fault-injection" in result.stdout
