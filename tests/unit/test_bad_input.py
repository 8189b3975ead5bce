"""Bad settings, in process: refused clearly, or reported once and counted, never raised into the app."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from otel_context import ConfigError, ContextSpanExporter

from ..support.tracing import App


def test_missing_token_is_reported_once_and_counted(tracing, otel_logs, monkeypatch):
    for name in ("OTEL_EXPORTER_CONTEXT_TOKEN", "CONTEXT_API_TOKEN", "CONTEXT_TOKEN"):
        monkeypatch.setenv(name, "")  # empty counts as unset
    exporter = ContextSpanExporter(register_metrics=False)  # default endpoint: https://api.context.ai
    app = App(exporter, tracing)
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
