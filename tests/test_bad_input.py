"""Bad input never raises into the app and loses nothing that was good."""

from __future__ import annotations

import json
import logging
import time

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from otel_context import ConfigError, ContextSpanExporter
from otel_context.text import TRUNCATION_MARKER

from .conftest import TOKEN, App, read_threads, wait_for


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


def test_missing_token_is_reported_once_and_counted(otel_logs, monkeypatch):
    for name in ("OTEL_EXPORTER_CONTEXT_TOKEN", "CONTEXT_API_TOKEN", "CONTEXT_TOKEN"):
        monkeypatch.setenv(name, "")  # empty counts as unset
    exporter = ContextSpanExporter(register_metrics=False)  # default endpoint: https://api.context.ai
    app = App(exporter)
    try:
        for _ in range(3):
            FakeListChatModel(responses=["a"]).invoke("q")
            app.processor.force_flush()
        assert exporter.stats()["threads_dropped"] == 3
        assert exporter.stats()["threads_uploaded"] == 0
        errors = [r for r in otel_logs.records if "no Context API token" in r.getMessage()]
        assert len(errors) == 1
    finally:
        app.close()


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


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("http://api.example.com", "clear text"),
        ("ftp://api.example.com", r"must be an http\(s\) URL"),
    ],
)
def test_unsafe_or_invalid_endpoints_are_refused_clearly(endpoint, message):
    with pytest.raises(ConfigError, match=message):
        ContextSpanExporter(endpoint=endpoint, token="t", register_metrics=False)


def test_plain_http_is_allowed_on_loopback_or_with_explicit_opt_in(monkeypatch):
    ContextSpanExporter(endpoint="http://127.0.0.1:9", token="t", register_metrics=False).shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_INSECURE", "true")
    ContextSpanExporter(endpoint="http://context.internal:8080", token="t", register_metrics=False).shutdown()


def test_settings_come_from_the_environment_and_keywords_win(monkeypatch):
    monkeypatch.setenv("CONTEXT_TOKEN", "legacy")
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_ENDPOINT", "http://localhost:1234")
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_TIMEOUT", "2500")
    exporter = ContextSpanExporter(register_metrics=False)
    assert (exporter.settings.token, exporter.settings.endpoint, exporter.settings.timeout_s) == (
        "legacy",
        "http://localhost:1234",
        2.5,
    )
    assert "legacy" not in repr(exporter.settings)
    monkeypatch.setenv("CONTEXT_API_TOKEN", "seed")
    assert ContextSpanExporter(register_metrics=False).settings.token == "seed"
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_TOKEN", "otel")
    assert ContextSpanExporter(register_metrics=False, token="kw").settings.token == "kw"
    assert ContextSpanExporter(register_metrics=False).settings.token == "otel"


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected", "said"),
    [
        ("OTEL_EXPORTER_CONTEXT_TIMEOUT", "abc", "timeout_s", 10.0, "is not an integer; using the default 10000"),
        ("OTEL_EXPORTER_CONTEXT_QUEUE_SIZE", "-5", "queue_size", 10_000, "is not an integer of at least 1"),
        ("OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS", "maybe", "include_tools", False, "is not a boolean (true or false)"),
        ("OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO", "2", "sample_ratio", 1.0, "is not a number between 0 and 1"),
        (
            "OTEL_EXPORTER_CONTEXT_ENDPOINT",
            "http://api.example.com",
            "endpoint",
            "https://api.context.ai",
            "clear text",
        ),
        (
            "OTEL_EXPORTER_CONTEXT_MODEL_ALIASES",
            "gpt",
            "model_aliases",
            {},
            "is not a comma-separated list of name=model",
        ),
        ("OTEL_EXPORTER_CONTEXT_REDACT", "email,nope", "redact", ("email",), "unknown pattern(s) nope"),
    ],
)
def test_a_malformed_variable_warns_once_and_its_default_is_used(
    monkeypatch, otel_logs, variable, value, setting, expected, said
):
    from otel_context.config import resolve_settings

    monkeypatch.setenv(variable, value)
    assert getattr(resolve_settings(token="t"), setting) == expected
    warnings = [r.getMessage() for r in otel_logs.records if variable in r.getMessage()]
    assert len(warnings) == 1 and said in warnings[0], warnings


def test_variables_are_parsed_alike_in_the_exporter_and_the_sidecar(monkeypatch, otel_logs):
    from otel_context.config import resolve_receiver_settings, resolve_settings

    for variable, value in {
        "OTEL_EXPORTER_CONTEXT_TIMEOUT": " 2500 ",
        "OTEL_EXPORTER_CONTEXT_SESSIONS": "Off",
        "OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS": "a, ,b",
        "OTEL_EXPORTER_CONTEXT_MAX_ELAPSED": "0",
        "OTEL_CONTEXT_SERVE_GRPC_PORT": "-1",
        "OTEL_CONTEXT_SERVE_PORT": "-3",
        "OTEL_CONTEXT_SERVE_SETTLE": "500",
        "OTEL_CONTEXT_SERVE_HOST": "   ",  # blank counts as unset
    }.items():
        monkeypatch.setenv(variable, value)
    settings, receiver = resolve_settings(token="t"), resolve_receiver_settings()
    assert (settings.timeout_s, settings.sessions, settings.include_workflows, settings.max_elapsed_s) == (
        2.5,
        False,
        ("a", "b"),
        0.0,
    )
    assert (receiver.grpc_port, receiver.port, receiver.settle_s, receiver.host) == (None, 4319, 0.5, "127.0.0.1")
    assert [r.getMessage() for r in otel_logs.records] == [
        "otel-context: OTEL_CONTEXT_SERVE_PORT='-3' is not an integer of at least 0; using the default 4319"
    ]
    with pytest.raises(ConfigError, match="between 0 and 1"):  # a bad keyword argument raises
        resolve_settings(token="t", sample_ratio=2.0)


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
