"""LangChain 1.x agents and LangGraph graphs: one run, one thread, with the question and the final answer.

The instrumentation wraps each graph run's `LangGraph.workflow` span in a contentless `invoke_agent
LangGraph` span; the runs below (tests/apps/langgraph_apps.py) go through the real instrumentation,
exporter and local Context API (their captured spans go through the conversion core in
tests/unit/test_langgraph.py).
"""

from __future__ import annotations

import pytest

from otel_context.conversion.threads import NO_CONTENT_TEXT
from otel_context.preparation.sessions import session_thread_id

from ..apps import langgraph_apps
from ..apps.langgraph_apps import SESSIONS
from ..support.threads import dialogue, read_threads, texts, turns
from .test_autoinstrument import run_app


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


def test_a_checkpointed_agent_in_process_and_through_the_sidecar(make_pipeline, client):
    pipeline = make_pipeline()
    expected = langgraph_apps.checkpointer_conversation()
    pipeline.flush()
    (thread,) = read_threads(client)
    assert dialogue(thread) == turns(expected)  # each turn appended once, in order


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
    script.write_text("from tests.apps.langgraph_apps import agent_invoke, agent_stream_updates\n"
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
