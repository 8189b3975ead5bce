"""Running the subprocess apps of `tests/apps/` against a local API, with production-like settings."""

from __future__ import annotations

import os
import subprocess
import sys

from otel_context.local_api import LocalContextAPI

from ..support.paths import REPO
from ..support.threads import TOKEN


def app_env(api: LocalContextAPI | None, **extra: str) -> dict[str, str]:
    """The environment of a fresh app process: no inherited OTel settings, ours from `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(PYTHONPATH=str(REPO), OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    if api is not None:
        env["OTEL_EXPORTER_CONTEXT_ENDPOINT"] = api.url
    env.update(extra)
    return env


def run_app(name: str, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"tests.apps.{name}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_app(name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"tests.apps.{name}", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
