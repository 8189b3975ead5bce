"""What `otel_context_startup.pth` runs at every interpreter start: one stdlib-only function.

Why a `.pth` at all: when `opentelemetry-distro` is installed too and `opentelemetry-instrument` picks
it (found first, or `OTEL_PYTHON_DISTRO=distro`), that distro sets `OTEL_METRICS_EXPORTER` and
`OTEL_LOGS_EXPORTER` to `otlp` before any configurator runs; without the OTLP exporter package the SDK
set-up then fails and there is no tracing at all. Our distro and configurator cannot run first in that
case; code run at interpreter start, before any distro reads the environment, can. It must cost
nothing in interpreters that never trace: this module imports only `os`, and `otel_context`'s
`__init__` imports nothing until an attribute is asked for.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# OTel's own variables (`opentelemetry.environment_variables`), spelled out here because this module loads
# nothing but `os`: neither the OTel API nor another module of ours (a test checks the names).
SIGNALS_OFF_BY_DEFAULT = ("OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")


def wants_context(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether `OTEL_TRACES_EXPORTER` names `context` (alone or in a list)."""
    names = environ.get("OTEL_TRACES_EXPORTER", "")
    return "context" in (name.strip().lower() for name in names.split(","))


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """When traces go to Context, metrics and logs are off unless the user set them."""
    if wants_context(environ):
        for name in SIGNALS_OFF_BY_DEFAULT:
            if not environ.get(name):
                environ[name] = "none"
