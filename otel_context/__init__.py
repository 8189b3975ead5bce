"""otel-context: OpenTelemetry spans of LangChain apps -> Context conversation threads.

The pipeline, in the order a span goes through it: `spans/` (read SDK spans or OTLP into `SpanRecord`s)
-> `assembly/` (hold a trace until its root arrives) -> `conversion/` (root and descendants -> one
thread) -> `preparation/` (select, redact, join sessions) -> `delivery/` (queue, retry, spool, send).
`pipeline.Pipeline` wires them; the entry points around it are `exporter` (OTel SDK), `receiver/`
(OTLP sidecar), `cli` and `local_api/`.

Nothing is imported here until asked for: `otel_context_startup.pth` imports `otel_context.startup` in
every interpreter of the environment, which must not load the OTel SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "ContextLogExporter",
    "ContextSpanExporter",
    "ContextSpanProcessor",
    "ExporterSettings",
    "__version__",
    "instrument_langchain_core",
]

if TYPE_CHECKING:
    from .autoconfig import instrument_langchain_core
    from .config import ConfigError, ExporterSettings
    from .exporter import ContextLogExporter, ContextSpanExporter, ContextSpanProcessor


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (PEP 562)."""
    if name in ("ConfigError", "ExporterSettings"):
        from . import config

        return getattr(config, name)
    if name in ("ContextSpanExporter", "ContextSpanProcessor", "ContextLogExporter"):
        from . import exporter

        return getattr(exporter, name)
    if name == "instrument_langchain_core":
        from .autoconfig import instrument_langchain_core

        return instrument_langchain_core
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
