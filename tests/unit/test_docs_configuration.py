"""docs/configuration.md against the code: its tables name exactly the variables of `environment_variables`, and
each exporter variable's keyword is the one `config.resolve_settings` reads it into, so neither can drift."""

from __future__ import annotations

import ast
import re

from ..support.paths import REPO

PAGE = REPO / "docs" / "configuration.md"
FAMILIES = ("OTEL_EXPORTER_CONTEXT", "OTEL_CONTEXT_SERVE", "OTEL_CONTEXT_LOCAL_API")


def _table_rows() -> list[str]:
    """Rows of the page's settings tables (those headed `| variable |`)."""
    rows, in_table = [], False
    for line in PAGE.read_text().splitlines():
        if line.startswith("| variable |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if in_table and not line.startswith("|---"):
            rows.append(line)
    return rows


def _documented_variables() -> set[str]:
    """Every variable named in the tables. A cell may shorten a name of the same family:
    `OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS` / `_EXCLUDE_WORKFLOWS`."""
    found: set[str] = set()
    for line in _table_rows():
        family = ""
        for name in re.findall(r"`([A-Z_][A-Z0-9_]*)`", line):
            if name.startswith("_") and family:
                found.add(family + name)
            elif "_" in name.strip("_"):
                found.add(name)
                family = next((f for f in FAMILIES if name.startswith(f + "_")), family)
    return found


def test_the_tables_list_exactly_the_variables_read():
    import opentelemetry.environment_variables as otel_variables

    from otel_context import environment_variables

    ours = {value for name, value in vars(environment_variables).items() if name.isupper()}
    not_settings = {environment_variables.OTEL_CONTEXT_SERVE_WORKER}  # set by the supervisor for its workers
    otel_own = {value for name, value in vars(otel_variables).items() if name.isupper()}
    documented = _documented_variables()
    assert sorted(ours - not_settings - documented) == [], "read but not in docs/configuration.md's tables"
    assert sorted(documented - otel_own - ours) == [], "in docs/configuration.md but not in environment_variables"


def _keywords_read() -> dict[str, str]:
    """Variable -> the `resolve_settings` key it is read into, from config.py's source."""
    from otel_context import environment_variables

    constants = {name for name in vars(environment_variables) if name.isupper()}
    tree = ast.parse((REPO / "otel_context" / "config.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "resolve_settings")
    local: dict[str, str] = {}  # `timeout_ms = read_env(OTEL_EXPORTER_CONTEXT_TIMEOUT, ...)`
    for node in function.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            names = [n.id for n in ast.walk(node.value) if isinstance(n, ast.Name) and n.id in constants]
            if names:
                local[node.targets[0].id] = names[0]
    table = next(n for n in function.body if isinstance(n, ast.AnnAssign) and isinstance(n.value, ast.Dict))
    read: dict[str, str] = {}
    for key, value in zip(table.value.keys, table.value.values, strict=True):  # type: ignore[union-attr]
        for node in ast.walk(value):
            if isinstance(node, ast.Name) and (node.id in constants or node.id in local):
                read[getattr(environment_variables, local.get(node.id, node.id))] = key.value  # type: ignore[union-attr]
    read[environment_variables.OTEL_EXPORTER_CONTEXT_TOKEN] = "token"  # resolve_token: this variable, then two more
    read[environment_variables.OTEL_EXPORTER_CONTEXT_TIMEOUT] = "timeout"  # the keyword in seconds, like OTLP's
    return read


def test_each_exporter_variable_names_its_keyword():
    read = _keywords_read()
    assert len(read) > 30
    seen = set()
    for row in _table_rows():
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        variables = re.findall(r"`([A-Z_][A-Z0-9_]*)`", cells[0])
        if not variables or variables[0] not in read:
            continue
        family = variables[0].rsplit("_", 2)[0] if variables[0].endswith("_WORKFLOWS") else ""
        names = [family + name if name.startswith("_") else name for name in variables]
        keywords = re.findall(r"`([a-z_]+)`", cells[1])
        assert keywords == [read[name] for name in names], row
        assert cells[1].endswith("(s)") == keywords[0].endswith(("_s", "timeout")), f"seconds not marked: {row}"
        seen.update(names)
    assert sorted(set(read) - seen) == [], "read by resolve_settings but without its row"


def test_the_durable_spool_is_one_row():
    """The answer a reader looks for ("which setting turns on a durable spool") is on one line."""
    assert [row for row in _table_rows() if "SPOOL_DIR" in row and "durable spool" in row]
