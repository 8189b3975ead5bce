"""The package's layout is its pipeline: each folder imports only the stages before it (docs/development.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "otel_context"

# What each part of the package may import from the rest of it (docs/development.md, the layout map).
FOUNDATION = {"model", "text", "environment_variables"}
MAY_IMPORT: dict[str, set[str]] = {
    "startup": set(),
    "environment_variables": set(),
    "model": set(),
    "text": set(),
    "counters": set(),
    "private_files": set(),
    "shared_sqlite": {"private_files"},
    "owners": {"private_files"},
    "serving": set(),
    "extras": set(),
    # settings are checked with the parser of the stage that uses them (model aliases, rating rules, patterns)
    "config": {"environment_variables", "conventions", "conversion", "preparation"},
    "spans": FOUNDATION,
    "conventions": FOUNDATION,
    "conversion": FOUNDATION | {"conventions"},
    "assembly": FOUNDATION | {"conventions", "conversion", "counters"},
    "preparation": FOUNDATION | {"conversion", "config", "shared_sqlite"},
    "delivery": FOUNDATION | {"config", "counters", "shared_sqlite", "private_files", "owners"},
    "pipeline": FOUNDATION
    | {"spans", "conventions", "assembly", "conversion", "preparation", "delivery", "config", "counters"}
    | {"private_files"},
    "exporter": FOUNDATION | {"spans", "assembly", "delivery", "pipeline", "config", "counters"},
    "helper_process": FOUNDATION | {"delivery", "pipeline", "config", "counters"},
    "autoconfig": {"startup", "environment_variables", "exporter"},  # ContextSpanProcessor, once configuring
    "receiver": FOUNDATION | {"spans", "pipeline", "config", "counters", "serving", "shared_sqlite", "owners"},
    "local_api": FOUNDATION | {"config", "serving", "extras", "private_files"},
    "demo": FOUNDATION | {"config", "exporter", "local_api", "extras"},
}
EVERYTHING = {"cli"}  # the command line may use every part


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "otel_context"


def _imports() -> dict[str, set[str]]:
    """Parts of the package each part imports (relative and absolute imports, lazy ones included)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]  # what relative imports start from, for a module and an __init__ alike
        if parts[-1] == "__init__":
            parts = parts[:-1]
        own = _part(".".join(parts))
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(filter(None, [base, node.module or ""]))
                targets = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target.startswith("otel_context.") and _part(target) != own:
                    found.setdefault(own, set()).add(_part(target))
    return found


IMPORTS = _imports()


PARTS = sorted(
    {
        _part("otel_context." + p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", "."))
        for p in PACKAGE.rglob("*.py")
    }
    - {"__init__"}
)


@pytest.mark.parametrize("part", PARTS)
def test_every_part_is_on_the_map(part):
    missing = f"otel_context.{part} is not on the map: add it to docs/development.md and here"
    assert part in MAY_IMPORT or part in EVERYTHING, missing


@pytest.mark.parametrize("part", sorted(set(MAY_IMPORT) & set(IMPORTS)))
def test_each_part_imports_only_what_comes_before_it(part):
    assert IMPORTS[part] <= MAY_IMPORT[part], f"{part} imports {sorted(IMPORTS[part] - MAY_IMPORT[part])}"


def test_the_stages_do_not_import_the_entry_points():
    entry_points = {"exporter", "receiver", "cli", "demo", "local_api", "autoconfig", "pipeline", "helper_process"}
    stages = ("spans", "conventions", "assembly", "conversion", "preparation", "delivery")
    assert {stage: IMPORTS.get(stage, set()) & entry_points for stage in stages} == {stage: set() for stage in stages}
