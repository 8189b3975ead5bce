"""The real Collector for the tests: otelcol-context, built from collector-config/builder-config.yaml.

`collector-config/build.py` builds it once and caches it outside the repository, keyed by the
manifest's hash, under a lock, so the first test that needs it may wait minutes and every later one
(and every later run) finds it at once. `.ci/run` builds it before the tests. Without Go, or when
the build fails, the tests that need the binary skip, except in CI (`CI` or
`OTEL_CONTEXT_COLLECTOR_TESTS=required` set), where they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "collector-config"
# A first build on 2 cores takes minutes; pytest-timeout counts fixture set-up in the first test.
BUILD_TIMEOUT_S = 1800


def _load_build_script():
    spec = importlib.util.spec_from_file_location("otelcol_build", CONFIG_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _build() -> tuple[Path | None, str | None]:
    script = _load_build_script()
    try:
        return script.build(), None
    except (script.BuildError, OSError) as error:
        return None, f"could not build the Collector ({error})"


def required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("OTEL_CONTEXT_COLLECTOR_TESTS") == "required"


def otelcol_binary() -> Path:
    """The built binary; skips the calling test (fails it in CI) when there is none."""
    binary, problem = _build()
    if binary is None:
        if required():
            pytest.fail(f"the Collector tests must run in CI, but {problem}")
        pytest.skip(problem)
    return binary


def validate(binary: Path, *configs: Path | str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`otelcol-context validate --config A [--config B ...]`: exit status and output."""
    args = [str(binary), "validate"]
    for config in configs:
        args += ["--config", str(config)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
