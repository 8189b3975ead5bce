"""Cost per thread, in settings: model aliases (`OTEL_EXPORTER_CONTEXT_MODEL_ALIASES`) read or refused once."""

from __future__ import annotations

import logging

import pytest

from otel_context.config import ConfigError, resolve_settings


def test_model_aliases_setting():
    assert resolve_settings(model_aliases="a=gpt-4o, azure/b=gpt-4o-mini").model_aliases == {
        "a": "gpt-4o",
        "azure/b": "gpt-4o-mini",
    }
    with pytest.raises(ConfigError):
        resolve_settings(model_aliases="nonsense")


def test_malformed_model_aliases_in_the_environment_warn_once(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_MODEL_ALIASES", "gpt4o")
    with caplog.at_level(logging.WARNING, logger="otel_context"):
        assert resolve_settings().model_aliases == {}
    assert sum("OTEL_EXPORTER_CONTEXT_MODEL_ALIASES" in r.getMessage() for r in caplog.records) == 1
