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
