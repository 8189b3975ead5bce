"""Bad input never raises into the app and loses nothing that was good."""

from __future__ import annotations

import json
import logging
import time

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from otel_context.text import TRUNCATION_MARKER

from ..support.threads import TOKEN, read_threads
from ..support.tracing import App
from ..support.waiting import wait_for


def parts(role: str, content: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": content}]}])


CHAT = {"traceloop.workflow.name": "", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-x"}


def chat_span(app: App, **attributes: object) -> None:
    with app.tracer.start_as_current_span("ChatModel.chat", attributes={**CHAT, **attributes}):
        pass


def test_malformed_json_attributes_keep_what_can_be_read(app, client):
    chat_span(
        app,
        **{
            "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "cut here',
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]),
            "gen_ai.system_instructions": "{not json",
        },
    )
    app.flush()
    (thread,) = read_threads(client)
    roles = [(m.role, m.message) for m in thread.messages]
    assert ("assistant", "ok") in roles
    assert ("system", "{not json") in roles  # a malformed JSON value is kept as the text it is
    assert thread.metadata["model"] == "gpt-x"


def test_huge_values_are_truncated_with_a_marker(make_app, client):
    app = make_app(max_message_chars=1000)
    huge = "x" * 3_000_000
    chat_span(
        app,
        **{
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": huge}]}]),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "fine"}]}]
            ),
        },
    )
    app.flush()
    (thread,) = read_threads(client)
    user = thread.messages[0].message
    assert user.startswith("x" * 1000)
    assert user.endswith(TRUNCATION_MARKER.format(dropped=3_000_000 - 1000))
    assert thread.messages[1].message == "fine"


def test_non_utf8_text_is_repaired_not_fatal(app, client):
    bad = "caf\udce9 au lait"  # a lone surrogate, as bytes decoded with surrogateescape produce
    chat_span(
        app,
        **{
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": bad}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]),
        },
    )
    app.flush()
    (thread,) = read_threads(client)
    assert thread.messages[0].message == "caf? au lait"
    assert thread.messages[1].message == "ok"


def test_content_switched_off_still_yields_a_thread(app, client, monkeypatch):
    monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "false")
    FakeListChatModel(responses=["secret answer"]).invoke("secret question")
    app.flush()
    (thread,) = read_threads(client)
    assert [m.type for m in thread.messages] == ["event"]
    assert "content not recorded" in thread.messages[0].message
    assert "secret" not in json.dumps(thread.as_dict())


def test_api_down_never_blocks_export(make_app, local_api):
    local_api.stop()  # the port now refuses connections
    app = make_app(max_elapsed_s=1)
    exporter = app.exporter
    before = time.monotonic()
    FakeListChatModel(responses=["a"]).invoke("q")
    assert time.monotonic() - before < 1.0  # the app's own call never waits on the API
    app.processor.force_flush(200)  # a flush waits, as asked, but no longer than its timeout
    assert time.monotonic() - before < 1.5
    assert wait_for(lambda: exporter.stats()["threads_dropped"] == 1, timeout=10)
    assert exporter.stats()["threads_retried"] >= 1


def test_wrong_token_is_rejected_once_and_never_logged(make_app, otel_logs):
    app = make_app(token="wrong-token-value")
    for _ in range(2):
        FakeListChatModel(responses=["a"]).invoke("q")
    app.flush()
    stats = app.exporter.stats()
    assert stats["threads_rejected"] == 2 and stats["threads_retried"] == 0
    logged = "\n".join(r.getMessage() for r in otel_logs.records)
    assert logged.count("rejected the token") == 1
    assert "wrong-token-value" not in logged and TOKEN not in logged


def test_export_after_shutdown_fails_quietly(app):
    app.exporter.shutdown()
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert app.exporter.export([]) is SpanExportResult.FAILURE


def test_spans_of_other_instrumentations_yield_nothing(app, client):
    with (
        app.tracer.start_as_current_span("GET /", attributes={"http.method": "GET"}),
        app.tracer.start_as_current_span("SELECT", attributes={"db.system": "postgresql"}),
    ):
        pass
    app.flush()
    assert read_threads(client) == []
    assert app.exporter.stats()["spans_ignored"] == 2
    logging.getLogger(__name__).debug("no threads, as expected")
