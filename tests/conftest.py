"""Fixtures every test may use: the session's tracing (no side effects at import), captured spans, our logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .support.tracing import Tracing


@pytest.fixture(scope="session")
def tracing() -> Tracing:
    """The global TracerProvider and the LangChain instrumentation, set up once, when a test first needs them."""
    return Tracing().start()


@pytest.fixture
def capture(tracing: Tracing) -> Iterator[Callable[[Callable[[], object]], list]]:
    """Run app code and return the finished SDK spans it produced (for sending them as OTLP)."""

    def run(code: Callable[[], object]) -> list:
        memory = InMemorySpanExporter()
        tracing.router.target = SimpleSpanProcessor(memory)
        try:
            code()
        finally:
            tracing.router.target = None
        return list(memory.get_finished_spans())

    yield run


@pytest.fixture
def otel_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="otel_context")
    return caplog
