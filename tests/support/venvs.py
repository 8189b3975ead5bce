"""Virtual environments of their own for tests that need a different set of installed packages.

Built with `uv` (from the test extras; pip when absent) under
`${OTEL_CONTEXT_CACHE:-~/.cache/otel-context}/envs/<key>`, the key a hash of the requirements, this
checkout's path and its `pyproject.toml` (otel-context is installed editable, entry points included).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ensure_env(name: str, requirements: list[str]) -> Path:
    """The environment's python, built unless a complete one is cached (a lock keeps builds apart)."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    key = hashlib.sha256(json.dumps([requirements, str(REPO), sys.version_info[:2]]).encode() + pyproject)
    root = Path(os.environ.get("OTEL_CONTEXT_CACHE") or Path.home() / ".cache" / "otel-context") / "envs"
    path = root / f"{name}-{key.hexdigest()[:12]}"
    python = path / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "ready").exists():
            return python
        shutil.rmtree(path, ignore_errors=True)
        uv = Path(sys.executable).with_name("uv")
        if uv.exists():
            steps = [
                [str(uv), "venv", "-q", "--python", sys.executable, str(path)],
                [str(uv), "pip", "install", "-q", "--python", str(python), *requirements],
                [str(uv), "pip", "install", "-q", "--python", str(python), "--no-deps", "-e", str(REPO)],
            ]
        else:
            steps = [
                [sys.executable, "-m", "venv", str(path)],
                [str(python), "-m", "pip", "install", "-q", *requirements],
                [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)],
            ]
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        (path / "ready").write_text("\n".join(requirements))
    return python
