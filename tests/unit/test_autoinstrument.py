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


def test_the_startup_names_are_otels_own():
    """`startup` spells OTel's variables out (it may load nothing else): they must be OTel's names."""
    import opentelemetry.environment_variables as otel_variables

    from otel_context import startup

    assert startup.SIGNALS_OFF_BY_DEFAULT == (otel_variables.OTEL_METRICS_EXPORTER, otel_variables.OTEL_LOGS_EXPORTER)
    assert startup.wants_context({otel_variables.OTEL_TRACES_EXPORTER: "context"})
