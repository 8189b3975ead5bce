"""Shared fixtures: a real local Context API over HTTP, the real exporter, the real instrumentation."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from getcontext import ContextAPI
from getcontext.token import Credential
from opentelemetry import trace
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_context import ContextSpanExporter
from otel_context.local_api import LocalContextAPI

TOKEN = "test-token-123"
REPO = Path(__file__).resolve().parent.parent
REFERENCE_SPANS = REPO / "tests" / "fixtures" / "reference"  # OpenLLMetry 0.62.4, captured


@pytest.fixture
def local_api() -> Iterator[LocalContextAPI]:
    with LocalContextAPI(token=TOKEN) as api:
        yield api


@pytest.fixture
def client(local_api: LocalContextAPI) -> Iterator[ContextAPI]:
    api = ContextAPI(credential=Credential(TOKEN), endpoint=local_api.url, retry_total=0)
    yield api
    api.close()


class _Router(SpanProcessor):
    """Sends spans to the current test's BatchSpanProcessor.

    The instrumentation can be instrumented only once per process (re-instrumenting after
    `uninstrument()` yields no spans), so one TracerProvider serves the whole session and each test
    plugs its own real BatchSpanProcessor + ContextSpanExporter into it.
    """

    def __init__(self) -> None:
        self.target: SpanProcessor | None = None

    def on_start(self, span, parent_context=None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span) -> None:
        if self.target is not None:
            self.target.on_end(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.target.force_flush(timeout_millis) if self.target is not None else True


_ROUTER = _Router()
_PROVIDER = TracerProvider(resource=Resource.create({"service.name": "test-app"}))
_PROVIDER.add_span_processor(_ROUTER)
trace.set_tracer_provider(_PROVIDER)  # what an app's own spans and other instrumentations use
LangchainInstrumentor().instrument(tracer_provider=_PROVIDER)


class App:
    """A LangChain app instrumented with OpenLLMetry, exporting through one ContextSpanExporter."""

    def __init__(self, exporter: ContextSpanExporter, **batch: int) -> None:
        self.exporter = exporter
        self.processor = BatchSpanProcessor(exporter, schedule_delay_millis=50, **batch)
        self.tracer = _PROVIDER.get_tracer("test-app")
        _ROUTER.target = self.processor

    def flush(self) -> None:
        self.processor.force_flush()
        assert self.exporter.force_flush(30_000)

    def close(self) -> None:
        if _ROUTER.target is self.processor:
            _ROUTER.target = None
        self.processor.shutdown()


@pytest.fixture
def make_app(local_api: LocalContextAPI) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(batch: dict[str, int] | None = None, **settings: object) -> App:
        settings.setdefault("endpoint", local_api.url)
        settings.setdefault("token", TOKEN)
        exporter = ContextSpanExporter(register_metrics=False, **settings)
        app = App(exporter, **(batch or {}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        with contextlib.suppress(Exception):
            app.close()


@pytest.fixture
def capture() -> Iterator[Callable[[Callable[[], object]], list]]:
    """Run app code and return the finished SDK spans it produced (for sending them as OTLP)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    def run(code: Callable[[], object]) -> list:
        memory = InMemorySpanExporter()
        _ROUTER.target = SimpleSpanProcessor(memory)
        try:
            code()
        finally:
            _ROUTER.target = None
        return list(memory.get_finished_spans())

    yield run


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


def read_threads(client: ContextAPI) -> list:
    """Every stored thread, in the order the app ran them, through the real client's list and detail calls."""
    listing = client.conversations(start_time="2000-01-01T00:00:00Z", per_page=1000, enforce_https=False)
    threads = [client.conversation(c.id, enforce_https=False) for c in listing.conversations or []]
    return sorted(threads, key=lambda t: ((t.metadata or {}).get("started_at", ""), t.messages[0].event_timestamp))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def texts(thread) -> list[tuple[str | None, str | None, str | None]]:
    return [(m.type, m.role, m.message) for m in thread.messages]


@pytest.fixture
def otel_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="otel_context")
    return caplog
