"""The `otel-context` command without a server: `--version`, `convert`, one-line errors, `--since`, the README."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from otel_context.cli import main, parse_since

from ..support.cli import one_line_error, run_cli
from ..support.paths import REFERENCE_SPANS, REPO


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


def test_stats_of_a_missing_spool(capsys, tmp_path):
    code, _, err = run_cli(capsys, "stats", "--spool", str(tmp_path / "nowhere"))
    one_line_error(code, err, "no spool")


def test_since_accepts_durations_and_dates():
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert parse_since("2h", now) == "2026-03-01T10:00:00Z"
    assert parse_since("7d", now) == "2026-02-22T12:00:00Z"
    assert parse_since("2026-02-01", now) == "2026-02-01T00:00:00Z"
    assert parse_since("2026-02-01T09:30:00+01:00", now) == "2026-02-01T08:30:00Z"


def test_readme_mentions_every_subcommand():
    from otel_context.cli import build_parser

    readme = (REPO / "README.md").read_text()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    missing = [name for name in commands if f"otel-context {name}" not in readme]
    assert missing == []


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
