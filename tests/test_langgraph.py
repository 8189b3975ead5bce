"""LangChain 1.x agents and LangGraph graphs: one run, one thread, with the question and the final answer.

The instrumentation wraps each graph run's `LangGraph.workflow` span in a contentless `invoke_agent
LangGraph` span; the runs below (tests/langgraph_apps.py) go through the real instrumentation, exporter
and local Context API, and their captured spans (tests/fixtures/langgraph/) through the conversion core.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.conversion.threads import NO_CONTENT_TEXT, ConversionOptions
from otel_context.preparation.sessions import session_thread_id
from otel_context.spans.sdk_json import load_json_file

from . import langgraph_apps
from .conftest import read_threads, texts
from .test_autoinstrument import run_app
from .test_conversations import make_pipeline  # noqa: F401  (in process and through the sidecar)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "langgraph"
EXPECTED: dict[str, list[list[str]]] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
SESSIONS = {"checkpointer_conversation": "conversation-1", "interrupt_and_resume": "approval-1"}


def dialogue(thread) -> list[tuple[str, str]]:
    """(role, text) of a thread's messages, tool steps and events left out."""
    return [(m.role, m.message if hasattr(m, "message") else m.text) for m in thread.messages if m.type == "message"]


def turns(expected: list[list[str]]) -> list[tuple[str, str]]:
    return [pair for question, answer in expected for pair in (("user", question), ("assistant", answer))]


def replay(name: str, shuffle: bool = False, **buffer_args):
    spans = load_json_file(FIXTURES / f"{name}.json")
    if shuffle:
        random.Random(10).shuffle(spans)
    buffer = TraceBuffer(options=ConversionOptions(include_tools=True), **buffer_args)
    threads = []
    for span in spans:  # one span per batch: the hardest split
        threads += buffer.add([span])
    return threads + buffer.drain(), buffer


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_captured_runs_give_one_thread_per_run(name):
    threads, buffer = replay(name)
    assert [dialogue(t) for t in threads] == [turns([pair]) for pair in EXPECTED[name]]
    assert buffer.counters.get("threads_converted") == len(EXPECTED[name])
    if name in SESSIONS:
        assert {t.metadata["thread_id"] for t in threads} == {SESSIONS[name]}


@pytest.mark.parametrize("name", ["agent_invoke", "supervisor", "interrupt_and_resume"])
def test_captured_runs_in_any_order(name):
    threads, _ = replay(name, shuffle=True, settle_s=60.0)  # as the sidecar, which waits for stragglers
    assert sorted(dialogue(t)[0][1] for t in threads) == sorted(q for q, _ in EXPECTED[name])
    assert all(dialogue(t)[0][0] == "user" for t in threads)


def test_the_wrapper_alone_is_no_thread():
    spans = load_json_file(FIXTURES / "agent_invoke.json")
    (wrapper,) = [s for s in spans if s.name == "invoke_agent LangGraph"]
    buffer = TraceBuffer()
    assert buffer.add([wrapper]) == []
    assert buffer.counters.get("roots_empty") == 1


def test_the_wrapper_is_the_root_and_takes_the_metadata_of_the_run_it_wraps():
    threads, _ = replay("checkpointer_conversation")
    wrappers = [s for s in load_json_file(FIXTURES / "checkpointer_conversation.json") if s.name.startswith("invoke_")]
    assert [t.metadata["span_id"] for t in threads] == [s.span_hex for s in wrappers]
    assert {t.metadata["workflow"] for t in threads} == {"LangGraph"}
    assert {t.metadata["conversation_id"] for t in threads} == {"conversation-1"}  # the wrapper's own


@pytest.mark.parametrize("name", list(langgraph_apps.SCENARIOS))
def test_a_run_arrives_as_one_thread(name, make_app, client):
    app = make_app(include_tools=True)
    expected = langgraph_apps.SCENARIOS[name]()
    app.flush()
    threads = read_threads(client)
    if name in SESSIONS:  # every turn of a LangGraph thread (a resumed run too) in one Context thread
        (thread,) = threads
        assert thread.id == session_thread_id(SESSIONS[name], scope=app.exporter.pipeline.sessions.scope)
        assert dialogue(thread) == turns(expected)
    else:
        assert [dialogue(t) for t in threads] == [turns([pair]) for pair in expected]
    for thread in threads:
        assert thread.messages[0].role == "user"
        assert not any(NO_CONTENT_TEXT in (m.message or "") for m in thread.messages)
    assert app.exporter.pipeline.counters.get("roots_empty") == 0


def test_tool_calls_sit_in_order_between_question_and_answer(make_app, client):
    app = make_app(include_tools=True)
    langgraph_apps.supervisor()
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [
        ("message", "user", "Ask the researcher what 6 times 7 is."),
        ("tool", "assistant", "6 times 7 is 42."),
        ("tool", "assistant", "42"),
        ("message", "assistant", "The researcher says 42."),
    ]
    steps = [m.additional_properties for m in thread.messages[1:3]]
    assert [(s["name"], s["input"]) for s in steps] == [
        ("ask_researcher", {"question": "What is 6 times 7?"}),
        ("multiply", {"a": 6, "b": 7}),
    ]


def test_a_checkpointed_agent_in_process_and_through_the_sidecar(make_pipeline, client):  # noqa: F811
    pipeline = make_pipeline()
    expected = langgraph_apps.checkpointer_conversation()
    pipeline.flush()
    (thread,) = read_threads(client)
    assert dialogue(thread) == turns(expected)
    assert thread.metadata["turns"] == "3"


def test_an_agent_under_an_http_span(make_app, client):
    app = make_app()
    with app.tracer.start_as_current_span("POST /chat", attributes={"http.request.method": "POST"}):
        langgraph_apps.agent_invoke()
    app.flush()
    (thread,) = read_threads(client)
    assert dialogue(thread) == turns([[langgraph_apps.QUESTION, langgraph_apps.ANSWER]])


def test_content_switched_off_gives_one_thread_saying_so(make_app, client, monkeypatch):
    monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "false")
    app = make_app()
    langgraph_apps.agent_invoke()
    app.flush()
    (thread,) = read_threads(client)
    assert [(m.type, m.message) for m in thread.messages] == [("event", NO_CONTENT_TEXT)]


def test_zero_code_agent(local_api, client, tmp_path):
    script = tmp_path / "agent_app.py"
    script.write_text("from tests.langgraph_apps import agent_invoke, agent_stream_updates\n"
                      "agent_invoke()\nagent_stream_updates()\n")  # fmt: skip
    run_app(str(script), local_api, OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS="true")
    threads = read_threads(client)
    assert [texts(t) for t in threads] == [
        [
            ("message", "user", langgraph_apps.QUESTION),
            ("tool", "assistant", "42"),
            ("message", "assistant", langgraph_apps.ANSWER),
        ]
    ] * 2
    assert all(t.metadata["service_name"] == "autoinstrumented" for t in threads)
