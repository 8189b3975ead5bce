"""Every fenced snippet of README.md and docs/ runs, page by page, against one local Context API, so none can rot.

The convention (docs/development.md, "Snippets"): a fenced block's language says what it is. `bash` and
`python` blocks run, in a scratch directory holding `app.py` (examples/seed_chain.py), with the exporter's
endpoint and token set to the local API, `127.0.0.1:8787` standing for its address, each under a timeout; a
`pip install` line is checked (the extras it names exist) instead of run. `text` blocks are output, not run.
An HTML comment on the line before the opening fence (or after the closing one) changes that:

- `<!-- not-run: reason -->`: not run here, for the reason given (a cluster, a daemon, a fresh venv);
- `<!-- background: URL -->`: a server, run until URL answers, then stopped with SIGTERM;
- `<!-- output-of: COMMAND -->` on a `text` block: COMMAND runs and prints every line of the block
  (`…` stands for any text).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_context.local_api import LocalContextAPI

from ..support.paths import REPO
from ..support.threads import TOKEN

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = {"bash", "python"}
KINDS = RUNNABLE | {"text"}
MARKER = re.compile(r"^\s*<!--\s*(not-run|background|output-of):\s*(.*?)\s*-->\s*$")
PLACEHOLDER = "127.0.0.1:8787"  # the local API's address in the snippets
SEEDED_THREAD = "0f8e2a4c-5b1d-4e3a-9c7f-1a2b3c4d5e6f"  # docs/local-api.md shows this thread
TIMEOUT = 60


@dataclass
class Snippet:
    page: Path
    line: int
    language: str
    code: str
    marker: str = ""
    argument: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def snippets(page: Path) -> list[Snippet]:
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, language, start = len(opening.group(1)), opening.group(2), i
        i += 1
        body = []
        while not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        snippet = Snippet(page, start + 1, language, "\n".join(body) + "\n")
        for neighbour in (start - 1, i + 1):
            marker = MARKER.match(lines[neighbour]) if 0 <= neighbour < len(lines) else None
            if marker:
                snippet.marker, snippet.argument = marker.groups()
        found.append(snippet)
        i += 1
    return found


def test_every_block_says_what_it_is():
    """A block of no known language would be skipped silently; a not-run block must say why."""
    blocks = [s for page in PAGES for s in snippets(page)]
    assert len(blocks) > 10
    assert [s.where for s in blocks if s.language not in KINDS] == []
    assert [s.where for s in blocks if s.marker == "not-run" and len(s.argument) < 10] == []
    assert [s.where for s in blocks if s.marker == "output-of" and s.language != "text"] == []


def test_every_variable_a_snippet_names_is_read():
    """A variable renamed in the code fails here, even in a snippet that only sets it."""
    from otel_context import environment_variables

    known = {value for name, value in vars(environment_variables).items() if name.isupper()}
    named = {
        (s.where, name)
        for page in PAGES
        for s in snippets(page)
        for name in re.findall(r"\b((?:OTEL_EXPORTER_CONTEXT|OTEL_CONTEXT)_[A-Z0-9_]*[A-Z0-9])\b", s.code)
    }
    assert len(named) > 5
    assert sorted((where, name) for where, name in named if name not in known) == []


@pytest.fixture(scope="module")
def api():
    with LocalContextAPI() as api:  # no token: the snippets' placeholder tokens are accepted
        body = {"conversation": {"id": SEEDED_THREAD, "messages": [{"role": "user", "message": "hello"}]}}
        request = urllib.request.Request(
            f"{api.url}/api/v1/log/conversation/thread",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        yield api


def clean_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "TRACELOOP_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def environment(api: LocalContextAPI) -> dict[str, str]:
    env = clean_environment()
    env.update(
        OTEL_EXPORTER_CONTEXT_ENDPOINT=api.url,
        OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,  # wins over the snippets' `CONTEXT_API_TOKEN=...`
        OTEL_SERVICE_NAME="docs-snippets",
    )
    return env


EXTRAS = set(importlib.metadata.metadata("otel-context").get_all("Provides-Extra") or ())


def checked_installs(code: str) -> str:
    """`pip install 'otel-context[x]'` lines are checked, not run: the suite's venv has every extra already."""
    out = []
    for line in code.splitlines():
        if re.match(r"^\s*pip install\b", line):
            for extras in re.findall(r"otel-context\[([a-z,]+)\]", line):
                assert set(extras.split(",")) <= EXTRAS, line
            line = ": " + line  # the shell's no-op
        out.append(line)
    return "\n".join(out) + "\n"


def run_snippet(snippet: Snippet, api: LocalContextAPI, cwd: Path) -> None:
    address = f"{api.host}:{api.port}"
    code = snippet.code.replace(PLACEHOLDER, address)
    env = environment(api)
    if snippet.language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", checked_installs(code)]
    if snippet.marker == "background":
        run_in_background(snippet, command, env, cwd)
        return
    before = api.store.count()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{snippet.where}: still running after {TIMEOUT} s")
    assert done.returncode == 0, f"{snippet.where} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    if "python app.py" in code:  # the zero-code way in: app.py's run reached the local API as a thread
        assert api.store.count() > before, f"{snippet.where}: app.py sent no thread\n{done.stderr}"


def run_in_background(snippet: Snippet, command: list[str], env: dict[str, str], cwd: Path) -> None:
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                pytest.fail(
                    f"{snippet.where} exited with {process.returncode} before {snippet.argument} answered:\n{output}"
                )
            try:
                with urllib.request.urlopen(snippet.argument, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{snippet.where}: {snippet.argument} never answered"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def check_output(snippet: Snippet, cwd: Path) -> None:
    """The command prints every line of the block, `…` matching anything."""
    try:
        done = subprocess.run(
            shlex.split(snippet.argument),
            cwd=cwd,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{snippet.where}: {snippet.argument} still running after {TIMEOUT} s")
    assert done.returncode == 0, f"{snippet.argument}:\n{done.stdout}\n{done.stderr}"
    printed = done.stdout.splitlines()
    for line in snippet.code.splitlines():
        pattern = re.compile(".*".join(re.escape(part) for part in line.rstrip().split("…")))
        assert any(pattern.fullmatch(out.rstrip()) for out in printed), f"{snippet.where}: not printed: {line!r}"


def runs(snippet: Snippet) -> bool:
    return snippet.marker == "output-of" or (snippet.marker != "not-run" and snippet.language in RUNNABLE)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(map(runs, snippets(p)))], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_snippets_of_a_page_run(page: Path, api: LocalContextAPI, tmp_path: Path):
    (tmp_path / "app.py").write_text((REPO / "examples" / "seed_chain.py").read_text())
    for snippet in filter(runs, snippets(page)):
        if snippet.marker == "output-of":
            check_output(snippet, tmp_path)
        else:
            run_snippet(snippet, api, tmp_path)
