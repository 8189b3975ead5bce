#!/usr/bin/env python3
"""Build otelcol-context, the Collector distribution described by builder-config.yaml, once.

    python3 collector-config/build.py          # builds if needed, prints the binary's path

The binary is cached outside the repository, keyed by the manifest's SHA-256:
``${OTEL_CONTEXT_CACHE:-~/.cache/otel-context}/otelcol/<sha256[:16]>/otelcol-context``. The
Collector builder (ocb) is installed beside it, at the core release the manifest names; Go's module
and build caches stay where Go keeps them (``go env GOMODCACHE GOCACHE``). An exclusive lock
(flock) makes a second process wait for the first one's build instead of starting its own.

Needs Go (``go`` on PATH, or /usr/local/go/bin/go) and the Go module proxy. Standard library only,
so it runs before the project is installed. Exit status 0 and the path on stdout, or non-zero with
the reason on stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

MANIFEST = Path(__file__).resolve().with_name("builder-config.yaml")
BINARY_NAME = "otelcol-context"
BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
# The builder is released with the core modules: take its version from the manifest's own
# `go.opentelemetry.io/collector/service` line, so the two cannot drift apart.
_CORE_VERSION = re.compile(r"gomod:\s*go\.opentelemetry\.io/collector/service\s+(v\S+)")


def cache_root() -> Path:
    configured = os.environ.get("OTEL_CONTEXT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "otel-context"


def manifest_key(manifest: Path = MANIFEST) -> str:
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


def binary_path(manifest: Path = MANIFEST) -> Path:
    """Where the binary for this manifest lives (built or not)."""
    return cache_root() / "otelcol" / manifest_key(manifest) / BINARY_NAME


def find_go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if found is None:
        raise BuildError("Go is not installed: neither `go` on PATH nor /usr/local/go/bin/go")
    return found


class BuildError(RuntimeError):
    pass


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise BuildError(f"{args[0]} exited with {result.returncode}; last lines of {log}:\n" + "\n".join(tail))


def build(manifest: Path = MANIFEST) -> Path:
    """Return the cached binary for `manifest`, building it first if it is not there yet."""
    target = binary_path(manifest)
    if os.access(target, os.X_OK):
        return target
    with locked(target.parent.with_name(target.parent.name + ".lock")):
        if os.access(target, os.X_OK):  # another process built it while this one waited
            return target
        match = _CORE_VERSION.search(manifest.read_text(encoding="utf-8"))
        if match is None:
            raise BuildError(
                f"{manifest}: no `go.opentelemetry.io/collector/service vX` line to take the builder's version from"
            )
        version = match.group(1)
        go = find_go()
        env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false")
        env["PATH"] = f"{Path(go).parent}{os.pathsep}{env.get('PATH', '')}"

        tools = cache_root() / "otelcol" / "tools" / f"builder-{version}"
        builder = tools / "builder"
        target.parent.mkdir(parents=True, exist_ok=True)
        log = target.parent / "build.log"
        log.write_text("")
        started = time.monotonic()
        if not os.access(builder, os.X_OK):
            tools.mkdir(parents=True, exist_ok=True)
            _run([go, "install", f"{BUILDER_MODULE}@{version}"], cwd=tools, env=dict(env, GOBIN=str(tools)), log=log)

        with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as work:
            # output_path in the manifest is relative: it resolves against the working directory.
            _run([str(builder), "--config", str(manifest)], cwd=Path(work), env=env, log=log)
            built = Path(work) / "_build" / BINARY_NAME
            if not built.is_file():
                raise BuildError(f"the builder finished but left no {built}")
            staged = target.with_name(BINARY_NAME + ".new")
            shutil.copy2(built, staged)
            staged.chmod(0o755)
            staged.replace(target)  # atomic: a reader never sees half a binary
        seconds = round(time.monotonic() - started, 1)
        info = {"manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(), "core_version": version}
        info |= {"build_seconds": seconds, "binary_bytes": target.stat().st_size}
        (target.parent / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"built {target} in {seconds} s ({target.stat().st_size / 2**20:.0f} MiB)", file=sys.stderr)
    return target


def main() -> int:
    try:
        print(build())
    except BuildError as error:
        print(f"collector-config/build.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
