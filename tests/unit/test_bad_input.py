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
