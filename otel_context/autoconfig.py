"""Zero-code set-up for `OTEL_TRACES_EXPORTER=context opentelemetry-instrument python app.py`.

Two traps are handled here:
- without a distro/configurator installed, `opentelemetry-instrument` never configures the SDK and
  ignores `OTEL_TRACES_EXPORTER`: `ContextDistro` and `ContextConfigurator` fill that gap;
- with `opentelemetry-distro`, metrics and logs default to the OTLP exporter, which is usually not
  installed, and the whole SDK set-up then fails (no tracing at all). `startup.apply_defaults()`
  turns metrics and logs off unless the user asked for them; `otel_context_startup.pth` runs it at
  interpreter start too, before any distro reads the environment, so the order in which distros are
  found never matters (see `startup`).
"""

from __future__ import annotations

import os

from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from .startup import apply_defaults


class ContextDistro(BaseDistro):
    """Selected when it is the only distro (or `OTEL_PYTHON_DISTRO=context`): traces to Context by default."""

    def _configure(self, **kwargs: object) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "context")
        apply_defaults()


class ContextConfigurator(_OTelSDKConfigurator):
    """The standard SDK set-up (TracerProvider + BatchSpanProcessor per exporter), with our defaults."""

    def _configure(self, **kwargs: object) -> None:
        apply_defaults()
        super()._configure(**kwargs)


def instrument_langchain_core() -> None:
    """`opentelemetry_post_instrument` hook: instrument LangChain apps that have only `langchain-core`.

    `opentelemetry-instrument` skips the LangChain instrumentation when the `langchain` package is
    absent (its dist metadata lists `langchain` as the instrumented library), although the
    instrumentation only needs `langchain-core`: LCEL-only apps would send nothing at all. This
    applies whatever the exporter (`otlp` to a Collector and the sidecar, `console`, `context`):
    installing otel-context is the opt-in.
    """
    disabled = {name.strip() for name in os.environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")}
    if "langchain" in disabled or "*" in disabled:
        return
    try:
        import langchain_core  # noqa: F401
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    except ImportError:
        return
    instrumentor = LangchainInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(skip_dep_check=True)
