"""Readers of span conventions: each says what a span is and reads its messages, models and usage.

Conversion asks the first convention that recognises a span; adding a convention is one new module
registered in `default_conventions`. The order matters: OpenLLMetry and OpenInference mark their spans
with keys of their own, and GenAI semconv, which any provider instrumentation writes, comes last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Convention, SpanClass, ToolStep, Usage
from .genai import GenAISemconv
from .keys import ASSOCIATION_PREFIX
from .openinference import OpenInference
from .openllmetry import OpenLLMetry


def default_conventions(association_prefix: str = ASSOCIATION_PREFIX) -> tuple[Convention, ...]:
    """Every convention otel-context reads, first match wins."""
    return (OpenLLMetry(association_prefix), OpenInference(), GenAISemconv(association_prefix))


CONVENTIONS: tuple[Convention, ...] = default_conventions()


def convention_for(
    attributes: Mapping[str, Any], conventions: tuple[Convention, ...] = CONVENTIONS
) -> tuple[Convention, SpanClass] | None:
    """The convention that recognises these attributes, and the span's class under it."""
    for convention in conventions:
        span_class = convention.classify(attributes)
        if span_class is not None:
            return convention, span_class
    return None


__all__ = [
    "CONVENTIONS",
    "Convention",
    "GenAISemconv",
    "OpenInference",
    "OpenLLMetry",
    "SpanClass",
    "ToolStep",
    "Usage",
    "convention_for",
    "default_conventions",
]
