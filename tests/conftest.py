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
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_context import ContextSpanExporter
from otel_context.local_api import LocalContextAPI

TOKEN = "test-token-123"
REPO = Path(__file__).resolve().parent.parent
REFERENCE_SPANS = REPO.parent / "shared" / "reference" / "spans"


@pytest.fixture
def local_api() -> Iterator[LocalContextAPI]:
    with LocalContextAPI(token=TOKEN) as api:
        yield api


@pytest.fixture
def client(local_api: LocalContextAPI) -> Iterator[ContextAPI]:
    api = ContextAPI(credential=Credential(TOKEN), endpoint=local_api.url, retry_total=0)
    yield api
    api.close()


class App:
    """A LangChain app instrumented with OpenLLMetry, exporting through one ContextSpanExporter."""

    def __init__(self, exporter: ContextSpanExporter, **batch: int) -> None:
        self.exporter = exporter
        self.provider = TracerProvider(resource=Resource.create({"service.name": "test-app"}))
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50, **batch))
        self.tracer = self.provider.get_tracer("test-app")
        self.instrumentor = LangchainInstrumentor()
        self.instrumentor.instrument(tracer_provider=self.provider)

    def flush(self) -> None:
        self.provider.force_flush()
        assert self.exporter.force_flush(30_000)

    def close(self) -> None:
        self.instrumentor.uninstrument()
        self.provider.shutdown()


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
def app(make_app: Callable[..., App]) -> App:
    return make_app()


def read_threads(client: ContextAPI) -> list:
    """Every stored thread, oldest first, through the real client's list and detail calls."""
    listing = client.conversations(start_time="2000-01-01T00:00:00Z", per_page=1000, enforce_https=False)
    ids = [c.id for c in listing.conversations or []]
    return list(reversed([client.conversation(i, enforce_https=False) for i in ids]))


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
