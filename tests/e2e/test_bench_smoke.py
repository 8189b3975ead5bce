"""The benchmark runner works: `python -m bench --quick` writes every section and the chart (no timing asserted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.report import SECTIONS

from ..support.paths import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_benchmark_writes_every_section_and_the_chart(tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a hung run is stopped with its servers and workers
    )
    try:
        out, err = runner.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)
        out, err = runner.communicate()
        raise AssertionError(f"python -m bench --quick did not finish:\n{err[-3000:]}") from None
    assert runner.returncode == 0, err[-3000:]
    text = (tmp_path / "results.md").read_text(encoding="utf-8")
    for title in SECTIONS:
        assert title in text, f"results.md lacks {title!r}"
        assert title in out, f"the terminal output lacks {title!r}"
    assert "| target |" in text and "CPU" in text
    assert (tmp_path / "overhead.png").read_bytes().startswith(PNG_MAGIC)
