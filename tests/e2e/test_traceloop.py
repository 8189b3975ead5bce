"""traceloop-sdk: `Traceloop.init(exporter=ContextSpanExporter())` in a real app process, with and without the
`langchain` package (traceloop-sdk instruments LangChain only when `langchain` or `langgraph` is installed;
`instrument_langchain_core()` is the one line an app with only `langchain-core` adds)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

import pytest

from otel_context.local_api import LocalContextAPI

from ..support.paths import REPO
from ..support.threads import TOKEN, read_threads, texts
from ..support.venvs import ensure_env

RUNTIME = [d for d in importlib.metadata.requires("otel-context") or () if "extra ==" not in d]
TRACELOOP = "traceloop-sdk==0.62.4"
APP = """
import os
from traceloop.sdk import Traceloop
from otel_context import ContextSpanExporter

Traceloop.init(app_name="traceloop-app", exporter=ContextSpanExporter(), telemetry_enabled=False)
if os.environ.get("INSTRUMENT_LANGCHAIN_CORE"):
    from otel_context import instrument_langchain_core

    print("instrumented:", instrument_langchain_core())

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
chain = prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()
print(chain.invoke({"product": "colorful socks"}, config={"metadata": {"user_id": "u-1"}}))

from opentelemetry import trace

trace.get_tracer_provider().shutdown()
"""
THREAD = [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]


@pytest.fixture(scope="module")
def with_langchain():
    return ensure_env("traceloop-langchain", [*RUNTIME, TRACELOOP, "langchain>=1,<2"])


@pytest.fixture(scope="module")
def core_only():
    python = ensure_env("traceloop-core-only", [*RUNTIME, TRACELOOP, "langchain-core>=1,<2"])
    for absent in ("langchain", "langgraph"):
        assert subprocess.run([python, "-c", f"import {absent}"], capture_output=True).returncode != 0
    return python


def run(python, api: LocalContextAPI, tmp_path, **extra: str) -> subprocess.CompletedProcess:
    app = tmp_path / "traceloop_app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_", "TRACELOOP_"))}
    env.update(
        OTEL_EXPORTER_CONTEXT_ENDPOINT=api.url,
        CONTEXT_API_TOKEN=TOKEN,
        TRACELOOP_TELEMETRY="false",  # no anonymous usage report: nothing leaves the machine
        PYTHONPATH=str(REPO),
        **extra,
    )
    result = subprocess.run([python, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Rainbow Threads" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_with_langchain_installed_traceloop_init_gives_the_thread(with_langchain, local_api, client, tmp_path):
    run(with_langchain, local_api, tmp_path)
    (thread,) = read_threads(client)
    assert texts(thread) == THREAD
    assert thread.metadata["user_id"] == "u-1"


def test_with_langchain_installed_the_added_line_changes_nothing(with_langchain, local_api, client, tmp_path):
    result = run(with_langchain, local_api, tmp_path, INSTRUMENT_LANGCHAIN_CORE="1")
    assert "instrumented: True" in result.stdout
    (thread,) = read_threads(client)  # one thread: instrumented once
    assert texts(thread) == THREAD


def test_with_only_langchain_core_traceloop_alone_sends_nothing(core_only, local_api, client, tmp_path):
    run(core_only, local_api, tmp_path)
    assert read_threads(client) == []  # traceloop-sdk skipped LangChain: no `langchain` package


def test_with_only_langchain_core_one_line_gives_the_thread(core_only, local_api, client, tmp_path):
    result = run(core_only, local_api, tmp_path, INSTRUMENT_LANGCHAIN_CORE="1")
    assert "instrumented: True" in result.stdout
    (thread,) = read_threads(client)
    assert texts(thread) == THREAD
    assert thread.metadata["user_id"] == "u-1"
