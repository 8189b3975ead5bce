"""Keyed pseudonyms, in settings: without a key, the chosen values are redacted and the key is never shown."""

from __future__ import annotations

import logging

import pytest

from otel_context.config import ConfigError, resolve_settings
from otel_context.preparation.redaction import Pseudonyms

EMAIL = "jane.doe@example.com"


def test_without_a_key_the_chosen_values_are_redacted_never_sent(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE", "user_id,email")
    with caplog.at_level(logging.WARNING, logger="otel_context"):
        settings = resolve_settings()
    assert sum("OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY" in r.getMessage() for r in caplog.records) == 1
    masks = Pseudonyms(settings.pseudonymize, None)
    assert masks.metadata("user_id", "u-1") == "[REDACTED:user_id]"
    assert masks.text(f"write to {EMAIL}") == "write to [REDACTED:email]"
    with pytest.raises(ConfigError):
        resolve_settings(pseudonymize="user_id", pseudonym_key=None)
    assert "a-secret" not in repr(resolve_settings(pseudonymize="user_id", pseudonym_key="a-secret"))
