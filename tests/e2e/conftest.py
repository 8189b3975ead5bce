"""End-to-end fixtures: a real local Context API over HTTP, the real exporter, the real sidecar."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from getcontext import ContextAPI
from getcontext.token import Credential
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from otel_context import ContextSpanExporter
from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.local_api import LocalContextAPI
from otel_context.receiver.service import SidecarThread

from ..support.threads import TOKEN
from ..support.tracing import App, Tracing
from ..support.waiting import wait_for


@pytest.fixture
def local_api() -> Iterator[LocalContextAPI]:
    with LocalContextAPI(token=TOKEN) as api:
        yield api


@pytest.fixture
def client(local_api: LocalContextAPI) -> Iterator[ContextAPI]:
    api = ContextAPI(credential=Credential(TOKEN), endpoint=local_api.url, retry_total=0)
    yield api
    api.close()


@pytest.fixture
def make_app(local_api: LocalContextAPI, tracing: Tracing) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(batch: dict[str, int] | None = None, **settings: object) -> App:
        settings.setdefault("endpoint", local_api.url)
        settings.setdefault("token", TOKEN)
        exporter = ContextSpanExporter(register_metrics=False, **settings)
        app = App(exporter, tracing, **(batch or {}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        with contextlib.suppress(Exception):
            app.close()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


class Pipeline:
    """The app's spans go to Context either in process or through the sidecar (OTLP/HTTP)."""

    def __init__(self, app: App, pipeline, sidecar: SidecarThread | None = None) -> None:
        self.app, self.pipeline, self.sidecar = app, pipeline, sidecar

    def flush(self) -> None:
        self.app.processor.force_flush()
        if self.sidecar is None:
            assert self.app.exporter.force_flush(30_000)
            return
        assert wait_for(lambda: self.pipeline.buffer.pending_roots == 0 and self.pipeline.flush(0.01), timeout=20)
        time.sleep(0.3)  # past the settle time of roots that came last
        assert self.pipeline.flush(20)

    @property
    def counters(self):
        return self.pipeline.counters


@pytest.fixture(params=["exporter", "sidecar"])
def make_pipeline(request, local_api, tracing, tmp_path) -> Iterator[Callable[..., Pipeline]]:
    made: list[tuple[App, SidecarThread | None]] = []

    def make(**settings: object) -> Pipeline:
        settings.setdefault("endpoint", local_api.url)
        settings.setdefault("token", TOKEN)
        if request.param == "exporter":
            app = App(ContextSpanExporter(register_metrics=False, **settings), tracing)
            made.append((app, None))
            return Pipeline(app, app.exporter.pipeline)
        receiver = resolve_receiver_settings(port=0, grpc_port=-1, settle_s=0.1, state_dir=str(tmp_path))
        sidecar = SidecarThread(receiver, resolve_settings(**settings))
        running = sidecar.start()
        app = App(OTLPSpanExporter(endpoint=f"{running.http_url}/v1/traces"), tracing)  # type: ignore[arg-type]
        made.append((app, sidecar))
        return Pipeline(app, running.pipeline, sidecar)

    yield make
    for app, sidecar in made:
        app.close()
        if sidecar is not None:
            sidecar.stop()
