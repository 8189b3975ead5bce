"""The peer, side by side: Arize Phoenix ingesting the sidecar benchmark's OTLP requests (full mode only).

Phoenix is the closest Python peer of `otel-context serve`: a service that ingests OTLP and stores spans.
It runs from a virtual environment of its own, made here on first use and cached outside the repo
(`${OTEL_CONTEXT_CACHE:-~/.cache/otel-context}/bench-phoenix`), with SQLite storage in a temporary
working directory. The same bodies go to its `/v1/traces` through the same client (`sidecar.post_all`,
4 connections); the run ends when its database holds every span. Measured like the sidecar: spans per
second, the server process's CPU per span, and its peak memory; so the lead is re-measured, not
remembered.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .machine import pid_cpu_s
from .services import stop_process
from .sidecar import peak_rss_mb, post_all

PHOENIX = "arize-phoenix==20.26.1"


@dataclass
class PhoenixRun:
    version: str
    spans: int
    done_s: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.done_s

    @property
    def cpu_us_per_span(self) -> float:
        return self.cpu_s * 1e6 / self.spans


def venv_python(log: Callable[[str], None] = print) -> Path:
    """The Python of Phoenix's own virtual environment, made (and `PHOENIX` installed) on first use."""
    cache = Path(os.environ.get("OTEL_CONTEXT_CACHE", "~/.cache/otel-context")).expanduser()
    venv = cache / "bench-phoenix"
    python = venv / "bin" / "python"
    marker = venv / f".installed-{PHOENIX}"
    if not marker.exists():
        log(f"  phoenix: installing {PHOENIX} into {venv} (first run only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PHOENIX], check=True, timeout=1800)
        marker.touch()
    return python


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stored_spans(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])
    except sqlite3.Error:
        return 0  # tables not made yet, or busy: ask again


class PhoenixProcess:
    """`phoenix serve` (SQLite in a temporary working directory) on free ports."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="bench-phoenix-")
        self.db = Path(self._dir.name) / "phoenix.db"
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in __exit__)
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> PhoenixProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_", "PYTHONPATH"))}
        env.update(
            PHOENIX_WORKING_DIR=self._dir.name,
            PHOENIX_SQL_DATABASE_URL=f"sqlite:///{self.db}",
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.port),
            PHOENIX_GRPC_PORT=str(_free_port()),
            PHOENIX_TELEMETRY_ENABLED="false",
        )
        command = [str(self.python), "-m", "phoenix.server.main", "serve"]
        self._process = subprocess.Popen(command, stdout=self._log, stderr=self._log, text=True, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self._log.seek(0)
        tail = self._log.read()[-2000:]
        self.__exit__()
        raise RuntimeError(f"phoenix serve did not start: {tail}")

    def cpu_s(self) -> float:
        assert self._process is not None
        return pid_cpu_s(self._process.pid)

    def peak_rss_mb(self) -> float:
        assert self._process is not None
        return peak_rss_mb(self._process.pid)

    def wait_stored(self, spans: int, stall_s: float = 120.0) -> None:
        last, moved = -1, time.perf_counter()
        while True:
            stored = _stored_spans(self.db)
            if stored >= spans:
                return
            if stored != last:
                last, moved = stored, time.perf_counter()
            elif time.perf_counter() - moved > stall_s:
                raise RuntimeError(f"phoenix stalled at {stored} of {spans} spans stored")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        stop_process(self._process, grace_s=60)
        self._process = None
        self._log.close()
        self._dir.cleanup()


def run(
    warm_bodies: list[bytes],
    bodies: list[bytes],
    spans: int,
    warm_spans: int,
    *,
    concurrency: int = 4,
    log: Callable[[str], None] = print,
) -> PhoenixRun:
    python = venv_python(log)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with PhoenixProcess(python) as phoenix:
        asyncio.run(post_all(phoenix.url, warm_bodies, 1))
        phoenix.wait_stored(warm_spans)
        cpu_before = phoenix.cpu_s()
        started = time.perf_counter()
        asyncio.run(post_all(phoenix.url, bodies, concurrency))
        phoenix.wait_stored(warm_spans + spans)
        done_s = time.perf_counter() - started
        result = PhoenixRun(version, spans, done_s, phoenix.cpu_s() - cpu_before, phoenix.peak_rss_mb())
    log(
        f"  phoenix {version}: {spans:,} spans stored in {done_s:.1f} s ({result.spans_per_s:,.0f} spans/s), "
        f"{result.cpu_us_per_span:,.0f} µs CPU per span, peak {result.peak_rss_mb:,.0f} MB"
    )
    return result
