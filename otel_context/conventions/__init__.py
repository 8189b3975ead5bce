"""Readers of span conventions: each says what a span is and reads its messages, models and usage.

Conversion asks the first convention that recognises a span; adding a convention is one new module
registered in `CONVENTIONS`.
"""

from __future__ import annotations

from .base import Convention, SpanClass, Usage
from .openllmetry import OpenLLMetry

CONVENTIONS: tuple[Convention, ...] = (OpenLLMetry(),)


def convention_for(attributes) -> tuple[Convention, SpanClass] | None:
    """The convention that recognises these attributes, and the span's class under it."""
    for convention in CONVENTIONS:
        span_class = convention.classify(attributes)
        if span_class is not None:
            return convention, span_class
    return None


__all__ = ["CONVENTIONS", "Convention", "SpanClass", "Usage", "convention_for"]
