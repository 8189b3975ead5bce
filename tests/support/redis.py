"""Debian's `redis-server` for the tests: started on a free port, its data in a temporary directory.

`.ci/run` installs it and sets `OTEL_CONTEXT_REDIS_TESTS=required`: the tests that need it then fail
when it is missing; elsewhere they skip. The server writes every command to its append-only file
before answering (`appendfsync always`), so a restart, even after kill -9, keeps every session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .sidecar import free_port


def required() -> bool:
    return os.environ.get("OTEL_CONTEXT_REDIS_TESTS") == "required"


def redis_binary() -> str:
    """The redis-server path; skips the calling test (fails it when required) if there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        if required():
            pytest.fail("OTEL_CONTEXT_REDIS_TESTS=required, but no redis-server is installed")
        pytest.skip("no redis-server installed (Debian: apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.fail("the redis client is missing: pip install -e '.[test]'")
    return binary


class RedisServer:
    """One redis-server process; `restart()` keeps its port and data. With `password`, clients must AUTH."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.password = password
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(15)

    def restart(self, down_s: float = 0.0, kill: bool = False) -> None:
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()

    def client(self):
        import redis

        return redis.Redis(port=self.port, password=self.password)
