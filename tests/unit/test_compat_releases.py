"""Spans captured from every release in the compatibility matrix (`tests/compat/run_matrix.py`),
replayed through conversion: each app under each release gives the right thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.spans.sdk_json import load_json_file

from ..compat.apps import APPS
from ..compat.run_matrix import FIXTURES, MATRIX, check

CAPTURED = [env for env in MATRIX if (FIXTURES / env.instrumentation / env.name).is_dir()]


def replay(folder: Path) -> list[dict]:
    """The apps' spans in the order they ran, through one buffer, as one process exported them."""
    buffer = TraceBuffer(settle_s=0)
    threads = []
    for app in APPS:
        threads += buffer.add(load_json_file(folder / f"{app}.json"))
    threads += buffer.drain()
    return [thread.to_wire() for thread in threads]


def test_every_release_of_the_matrix_was_captured():
    assert [env.name for env in CAPTURED] == [env.name for env in MATRIX]


@pytest.mark.parametrize("env", CAPTURED, ids=lambda env: f"{env.instrumentation}-{env.name}")
def test_each_app_gives_its_thread(env):
    threads = replay(FIXTURES / env.instrumentation / env.name)
    assert check(env, threads) == []
    operations = {t["metadata"]["operation"] for t in threads if "operation" in t["metadata"]}
    assert operations <= {"chat", "completion", "text_completion"}, operations


def test_the_declared_floor_is_the_oldest_release_the_matrix_runs():
    import tomllib

    from ..support.paths import REPO

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (declared,) = [d for d in dependencies if d.startswith("opentelemetry-instrumentation-langchain")]
    oldest = min((env for env in MATRIX if env.instrumentation == "openllmetry"), key=lambda e: e.version)
    assert declared == f"opentelemetry-instrumentation-langchain>={'.'.join(map(str, oldest.version[:2]))}"


@pytest.mark.parametrize("env", CAPTURED, ids=lambda env: f"{env.instrumentation}-{env.name}")
def test_one_span_per_batch(env):
    """The hardest split: each span alone, as an exporter may see them. Under OpenTelemetry's instrumentation up to
    1.2b0 beside OpenLLMetry's, a run's GenAI span is the parent of OpenLLMetry's span of the same run (its handler
    makes it current) and stays current after the run: each run is still one thread, OpenLLMetry's."""
    buffer = TraceBuffer(settle_s=0)
    threads = []
    for app in APPS:
        for span in load_json_file(FIXTURES / env.instrumentation / env.name / f"{app}.json"):
            threads += buffer.add([span])
    threads += buffer.drain()
    assert check(env, [thread.to_wire() for thread in threads]) == []
    assert buffer.held_spans == 0
