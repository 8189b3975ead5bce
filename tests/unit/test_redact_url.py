"""A Redis URL is shown (logs, `/stats`, `otel-context stats`) without any password redis-py would read
from it (issue 21: `"session_db": "redis://:s3cret@..."` in `/stats`, and `?password=` missed)."""

from __future__ import annotations

import pytest

from otel_context.config import ExporterSettings
from otel_context.preparation.session_redis import redact_url

FORMS = [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://alice:s3cret@redis.internal/0", "redis://alice:***@redis.internal/0"),
    ("rediss://alice:s3cret@redis.internal:6380/2", "rediss://alice:***@redis.internal:6380/2"),
    ("redis://s3cret@redis.internal/0", "redis://***@redis.internal/0"),  # a password that lost its colon
    ("redis://redis.internal/0?password=s3cret", "redis://redis.internal/0?password=***"),
    (
        "redis://redis.internal/0?db=1&password=s3cret&socket_timeout=2",
        "redis://redis.internal/0?db=1&password=***&socket_timeout=2",
    ),
    ("redis://redis.internal/0?pass%77ord=s3cret", "redis://redis.internal/0?pass%77ord=***"),  # decoded by redis-py
    ("rediss://h/0?ssl_password=s3cret&ssl_cert_reqs=required", "rediss://h/0?ssl_password=***&ssl_cert_reqs=required"),
    ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
    ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("redis://:s3/cr?et@h/0", "redis://:***@h/0"),  # a password with unencoded delimiters
    ("redis://h/0#s3cret", "redis://h/0#***"),
    ("redis://redis.internal:6379/0", "redis://redis.internal:6379/0"),
    ("/var/lib/otel-context/sessions.db", "/var/lib/otel-context/sessions.db"),
]


@pytest.mark.parametrize(("url", "shown"), FORMS)
def test_every_password_form_is_hidden(url, shown):
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_describe_hides_the_session_store_password_and_an_endpoint_password():
    settings = ExporterSettings(
        session_db="redis://default:s3cret@127.0.0.1:6379/0?password=s3cret",
        endpoint="https://user:s3cret@api.context.ai",
        token="t0ken",
    )
    described = settings.describe()
    assert described["session_db"] == "redis://default:***@127.0.0.1:6379/0?password=***"
    assert described["endpoint"] == "https://user:***@api.context.ai"
    assert "s3cret" not in repr(described) and "t0ken" not in repr(described)
    assert ExporterSettings().describe()["session_db"] is None
