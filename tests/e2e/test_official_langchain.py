"""OpenTelemetry's own LangChain instrumentation, end to end: real LangChain apps calling `ChatOpenAI` against a
local OpenAI-compatible stub (tests/apps/official_apps.py), the real instrumentation and SDK, each app in a
process of its own (an instrumentation is instrumented once per process), the real `context-python` client
reading back what the local Context API stored.

- alone, in process (`ContextSpanExporter`) and through the sidecar (OTLP/HTTP): the threads OpenLLMetry's
  instrumentation gives;
- beside OpenLLMetry's, in code and zero-code (`opentelemetry-instrument` loads both entry points named
  `langchain`, and OpenTelemetry's OpenAI instrumentation too), with and without `opentelemetry-distro`:
  one run, one thread, usage counted once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from ..apps.official_apps import NOT_RECORDED_BY_OFFICIAL, SCENARIOS
from ..support.paths import REPO
from ..support.threads import TOKEN, read_threads, texts
from ..support.waiting import wait_for
from .test_autoinstrument import distro_overlay  # noqa: F401 (a fixture)

APP = REPO / "tests" / "apps" / "official_apps.py"
INSTRUMENT = str(Path(sys.executable).with_name("opentelemetry-instrument"))


def run(local_api, *command: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "TRACELOOP_"))}
    env.update(
        OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url,
        CONTEXT_API_TOKEN=TOKEN,
        OTEL_EXPORTER_CONTEXT_ROOT_WAIT="1000",
        OTEL_SERVICE_NAME="official-app",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def expected_threads(names: list[str], alone: bool) -> list[list[tuple[str, str, str]]]:
    out = []
    for name in names:
        if alone and name in NOT_RECORDED_BY_OFFICIAL:
            continue
        out += EXPECTATIONS[name]
    return out


def _expectations() -> dict[str, list[list[tuple[str, str, str]]]]:
    import json

    from ..support.paths import FIXTURES

    raw = json.loads((FIXTURES / "official" / "expected.json").read_text(encoding="utf-8"))
    return {name: [[tuple(m) for m in thread] for thread in threads] for name, threads in raw.items()}


EXPECTATIONS = _expectations()
ALL = list(SCENARIOS)


def check(client, names: list[str], *, alone: bool) -> list:
    threads = read_threads(client)
    assert sorted(texts(t) for t in threads) == sorted(expected_threads(names, alone))  # session threads: no start
    return threads


def facts(thread) -> dict[str, str]:
    """A run's facts: on the thread, or (a session's turn) on its last message."""
    return {**(thread.metadata or {}), **(thread.messages[-1].metadata or {})}


def test_alone_in_process(local_api, client):
    run(local_api, sys.executable, str(APP), "--instrument", "official")
    threads = check(client, ALL, alone=True)
    by_question = {t.messages[0].message: t for t in threads if t.messages[0].role == "user"}
    agent = by_question["What is 6 times 7?"]
    assert (facts(agent)["input_tokens"], facts(agent)["output_tokens"]) == ("22", "14")  # two calls, once each
    session = by_question["When does my order ship?"]
    assert session.metadata["conversation_id"] == "conversation-42"  # gen_ai.conversation.id: one thread
    assert by_question["socks"].metadata["service_name"] == "official-app"


def test_alone_through_the_sidecar(local_api, client, tmp_path):
    receiver = resolve_receiver_settings(port=0, grpc_port=-1, settle_s=0.1, state_dir=str(tmp_path))
    sidecar = SidecarThread(receiver, resolve_settings(endpoint=local_api.url, token=TOKEN, root_wait_s=1.0))
    running = sidecar.start()
    try:
        names = ["chat", "chain", "chain_keys", "chain_error", "agent", "graph"]
        run(
            local_api,
            sys.executable,
            str(APP),
            "--instrument",
            "official",
            "--otlp",
            f"{running.http_url}/v1/traces",
            *names,
        )
        assert wait_for(lambda: running.pipeline.buffer.pending_roots == 0 and not running.pipeline.buffer.waiting, 20)
        assert running.pipeline.flush(20)
        check(client, names, alone=True)
    finally:
        sidecar.stop()


def test_beside_openllmetry_in_code(local_api, client):
    run(local_api, sys.executable, str(APP), "--instrument", "both")
    check(client, ALL, alone=False)


@pytest.mark.parametrize(
    "chosen",
    [None, {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"}],
    ids=["no-distro", "opentelemetry-distro-forced"],
)
def test_beside_openllmetry_zero_code(local_api, client, distro_overlay, chosen):  # noqa: F811
    # Both `langchain` entry points load, and OpenTelemetry's OpenAI instrumentation (installed too)
    names = ["chat", "text", "chain", "chain_error", "agent", "graph"]
    pythonpath = str(REPO) if chosen is None else os.pathsep.join([str(REPO), str(distro_overlay)])
    run(
        local_api,
        INSTRUMENT,
        sys.executable,
        str(APP),
        "--instrument",
        "none",
        *names,
        OTEL_TRACES_EXPORTER="context",
        PYTHONPATH=pythonpath,
        **(chosen or {}),
    )
    threads = check(client, names, alone=False)
    assert all(t.metadata["service_name"] == "official-app" for t in threads)
    (chat,) = [t for t in threads if t.messages[0].message == "Translate to French."]
    assert (facts(chat)["input_tokens"], facts(chat)["output_tokens"]) == ("11", "7")  # one call, counted once
