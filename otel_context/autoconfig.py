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

import inspect
import os
from typing import TYPE_CHECKING

from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.sdk import _configuration as sdk_configuration
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from .startup import apply_defaults, wants_context

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


class ContextDistro(BaseDistro):
    """Selected when it is the only distro (or `OTEL_PYTHON_DISTRO=context`): traces to Context by default."""

    def _configure(self, **kwargs: object) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "context")
        apply_defaults()


class ContextConfigurator(_OTelSDKConfigurator):
    """The standard SDK set-up (TracerProvider + a batch processor per exporter), with our defaults, and
    `ContextSpanProcessor` for `context`: `provider.force_flush()` waits for delivery as documented.

    Through the configurator's `export_span_processor` argument (SDKs that have it; with older ones,
    and under another distro's configurator, the SDK's `BatchSpanProcessor`: a flush hands spans over)."""

    def _configure(self, **kwargs: object) -> None:
        apply_defaults()
        if wants_context() and takes_export_span_processor() and "export_span_processor" not in kwargs:
            from .exporter import export_processor

            kwargs["export_span_processor"] = export_processor
        super()._configure(**kwargs)


def takes_export_span_processor() -> bool:
    """Whether this SDK's configurator lets us choose the processor of each exporter."""
    initialize = getattr(sdk_configuration, "_initialize_components", None)
    try:
        return initialize is not None and "export_span_processor" in inspect.signature(initialize).parameters
    except (TypeError, ValueError):
        return False


def instrument_langchain_core(tracer_provider: TracerProvider | None = None) -> bool:
    """Instrument LangChain apps that have only `langchain-core`; True when LangChain is instrumented now.

    The `opentelemetry_post_instrument` hook of `opentelemetry-instrument`, and the one line to add after
    `Traceloop.init(exporter=ContextSpanExporter())`. Both `opentelemetry-instrument` and traceloop-sdk
    skip OpenLLMetry's LangChain instrumentation when the `langchain` package is absent (its dist
    metadata lists `langchain`; traceloop-sdk asks for `langchain` or `langgraph`), although it only
    needs `langchain-core`: LCEL-only apps would send nothing at all. Under `opentelemetry-instrument`
    this applies whatever the exporter (`otlp` to a Collector and the sidecar, `console`, `context`):
    installing otel-context is the opt-in. An instrumentation already applied (traceloop-sdk's, with
    `langchain` installed) is left as it is; `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain` is
    honoured. Spans go to `tracer_provider`, else to the global one (which `Traceloop.init` sets).
    """
    disabled = {name.strip() for name in os.environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")}
    if "langchain" in disabled or "*" in disabled:
        return False
    try:
        import langchain_core  # noqa: F401
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    except ImportError:
        return False
    instrumentor = LangchainInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        if tracer_provider is None:
            instrumentor.instrument(skip_dep_check=True)
        else:
            instrumentor.instrument(skip_dep_check=True, tracer_provider=tracer_provider)
    return True
