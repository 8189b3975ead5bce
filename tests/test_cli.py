"""The `otel-context` command as a newcomer meets it: one-line errors, `--version`, `threads`."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from otel_context.cli import main, parse_since
from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from .conftest import REFERENCE_SPANS, REPO, TOKEN
from .test_local_api import chat, write


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *expected: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for part in expected:
        assert part in lines[0], lines[0]


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


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == "otel-context 0.1.0"


def test_convert_of_a_missing_file(capsys, tmp_path):
    code, out, err = run_cli(capsys, "convert", str(tmp_path / "spans.json"))
    one_line_error(code, err, "otel-context convert: cannot read", "spans.json", "No such file")
    assert out == ""


def test_convert_of_a_file_that_is_not_spans(capsys, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "convert", str(bad))
    one_line_error(code, err, "notes.json is not a span dump")


def test_convert_prints_threads(capsys):
    code, out, _ = run_cli(capsys, "convert", str(REFERENCE_SPANS / "chain_lcel.json"))
    assert code == 0
    assert [m["role"] for m in json.loads(out)[0]["messages"]] == ["user", "assistant"]


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


def test_stats_of_a_missing_spool(capsys, tmp_path):
    code, _, err = run_cli(capsys, "stats", "--spool", str(tmp_path / "nowhere"))
    one_line_error(code, err, "no spool")


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


def test_since_accepts_durations_and_dates():
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert parse_since("2h", now) == "2026-03-01T10:00:00Z"
    assert parse_since("7d", now) == "2026-02-22T12:00:00Z"
    assert parse_since("2026-02-01", now) == "2026-02-01T00:00:00Z"
    assert parse_since("2026-02-01T09:30:00+01:00", now) == "2026-02-01T08:30:00Z"


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


def test_readme_mentions_every_subcommand():
    from otel_context.cli import build_parser

    readme = (REPO / "README.md").read_text()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    missing = [name for name in commands if f"otel-context {name}" not in readme]
    assert missing == []


def _readme_variables() -> set[str]:
    """Every variable named in the README's settings tables (those headed `| variable |`).

    A cell may shorten a name of the same family: `OTEL_CONTEXT_SERVE_MAX_SPANS`, `_MAX_ATTRIBUTES`.
    """
    import re

    families = ("OTEL_EXPORTER_CONTEXT", "OTEL_CONTEXT_SERVE", "OTEL_CONTEXT_LOCAL_API")
    found: set[str] = set()
    in_table = False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("| variable |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        if not in_table:
            continue
        family = ""
        for name in re.findall(r"`([A-Z_][A-Z0-9_]*)`", line):
            if name.startswith("_") and family:
                found.add(family + name)
            elif "_" in name.strip("_"):
                found.add(name)
                family = next((f for f in families if name.startswith(f + "_")), family)
    return found


def test_the_readme_tables_list_exactly_the_variables_read():
    """`environment_variables` and the README's tables name the same variables, so neither can drift."""
    import opentelemetry.environment_variables as otel_variables

    from otel_context import environment_variables

    ours = {value for name, value in vars(environment_variables).items() if name.isupper()}
    not_settings = {environment_variables.OTEL_CONTEXT_SERVE_WORKER}  # set by the supervisor for its workers
    otel_own = {value for name, value in vars(otel_variables).items() if name.isupper()}
    documented = _readme_variables()
    assert sorted(ours - not_settings - documented) == [], "read but not in the README's tables"
    assert sorted(documented - otel_own - ours) == [], "in the README's tables but not in environment_variables"


def test_variables_are_read_through_their_constants():
    """No module spells a variable's name in a string of its own (`"OTEL_..."`, `f"OTEL_...={value}"`); prose
    in docstrings and log messages may mention them."""
    import ast
    import re

    spelled = re.compile(r"(OTEL|CONTEXT)_[A-Z0-9_]*[A-Z0-9](=|$)")
    allowed = {"environment_variables.py", "startup.py"}  # startup may load nothing but `os`
    found = []
    for path in sorted((REPO / "otel_context").rglob("*.py")):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and spelled.match(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []
