"""Sessions shared through Redis, without Redis: a Redis URL without the client names the extra to install."""

from __future__ import annotations

import logging
import sys

import pytest

from otel_context.config import ConfigError, resolve_settings
from otel_context.pipeline import Pipeline
from otel_context.preparation.session_redis import RedisSessions


def test_a_redis_url_without_the_client_names_the_extra(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    url = "redis://:secret@127.0.0.1:1/0"
    with pytest.raises(ConfigError, match=r"otel-context\[redis\]") as error:
        RedisSessions(url)
    assert "secret" not in str(error.value)
    settings = resolve_settings(endpoint="http://127.0.0.1:1", token="t", session_db=url)
    with pytest.raises(ConfigError, match=r"otel-context\[redis\]"):
        Pipeline(settings, push_back=True)  # the sidecar does not start
    caplog.set_level(logging.ERROR, logger="otel_context")
    pipeline = Pipeline(settings)  # in process: one line, and the in-memory book
    assert not pipeline.sessions.shared
    assert any("otel-context[redis]" in r.getMessage() for r in caplog.records)
    pipeline.shutdown(1)
