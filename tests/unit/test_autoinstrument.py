"""Zero code change, without a process: the defaults the startup `.pth` applies to the environment."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_TRACES_EXPORTER": "context"}, {"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, {}),
        (
            {"OTEL_TRACES_EXPORTER": "context", "OTEL_METRICS_EXPORTER": "otlp"},
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "none"},
        ),
    ],
)
def test_signals_other_than_traces_are_off_only_when_unset(environ, expected):
    from otel_context.startup import apply_defaults

    apply_defaults(environ)
    assert {k: v for k, v in environ.items() if k != "OTEL_TRACES_EXPORTER"} == expected
