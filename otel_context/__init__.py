"""otel-context: OpenTelemetry spans of LangChain apps -> Context conversation threads."""

from .config import ConfigError, ExporterSettings
from .exporter import ContextSpanExporter

__version__ = "0.1.0"
__all__ = ["ConfigError", "ContextSpanExporter", "ExporterSettings", "__version__"]
