"""Zero code change: `OTEL_TRACES_EXPORTER=context opentelemetry-instrument python app.py`, in subprocesses."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from otel_context.local_api import LocalContextAPI

from ..support.paths import REPO
from ..support.threads import TOKEN, read_threads, texts
from ..support.venvs import ensure_env

INSTRUMENT = str(Path(sys.executable).with_name("opentelemetry-instrument"))
RUNTIME = [d for d in importlib.metadata.requires("otel-context") or () if "extra ==" not in d]  # no extras


@pytest.fixture(scope="session")
def distro_overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`opentelemetry-distro` installed in a directory of its own, added to PYTHONPATH when wanted."""
    target = tmp_path_factory.mktemp("distro")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "opentelemetry-distro"],
        check=True,
    )
    return target


PROBE = (  # the signals' exporter settings and how many metric readers the SDK was given
    "import os; from opentelemetry import metrics; "
    "config = getattr(metrics.get_meter_provider(), '_sdk_config', None); "
    "print(os.environ.get('OTEL_METRICS_EXPORTER'), os.environ.get('OTEL_LOGS_EXPORTER'), "
    "len(getattr(config, 'metric_readers', ())))"
)


def run_app(
    script: str, api: LocalContextAPI, *, pythonpath: list[Path] = (), python: Path | None = None, **extra: str
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(
        OTEL_TRACES_EXPORTER="context",
        OTEL_EXPORTER_CONTEXT_ENDPOINT=api.url,
        CONTEXT_API_TOKEN=TOKEN,
        OTEL_SERVICE_NAME="autoinstrumented",
        PYTHONPATH=os.pathsep.join(str(p) for p in [REPO, *pythonpath]),
    )
    env.update(extra)
    command = ["-c", PROBE] if script == "probe" else [str(REPO / "examples" / script)]
    result = subprocess.run(
        [str(python.with_name("opentelemetry-instrument")), str(python), *command]
        if python
        else [INSTRUMENT, sys.executable, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_without_a_distro(local_api, client):
    result = run_app("seed_chat.py", local_api)
    assert "J'adore la programmation." in result.stdout
    (thread,) = read_threads(client)
    assert texts(thread)[-1] == ("message", "assistant", "J'adore la programmation.")
    assert thread.metadata["service_name"] == "autoinstrumented"


@pytest.mark.parametrize(
    "chosen",
    [{}, {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"}],
    ids=["first-found", "opentelemetry-distro-forced"],
)
def test_with_opentelemetry_distro_installed(local_api, client, distro_overlay, chosen):
    # The distro defaults metrics and logs to OTLP, which is not installed: tracing must still work,
    # whichever distro and configurator are picked (the forced case is the worst one).
    import importlib.metadata as md

    with pytest.raises(md.PackageNotFoundError):
        md.version("opentelemetry-distro")  # only the overlay has it
    result = run_app("seed_chain.py", local_api, pythonpath=[distro_overlay], **chosen)
    assert "Rainbow Threads" in result.stdout
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]
    assert "Failed to auto initialize" not in result.stderr
    # Metrics and logs stay off: the distro's OTLP defaults would fail (exporter absent) or, as here
    # where the OTLP exporter happens to be installed, export to a collector nobody asked for.
    probe = run_app("probe", local_api, pythonpath=[distro_overlay], **chosen)
    assert probe.stdout.split() == ["none", "none", "0"]


@pytest.mark.parametrize(
    "malformed",
    [
        {},
        {"OTEL_EXPORTER_CONTEXT_TIMEOUT": "abc"},
        {"OTEL_EXPORTER_CONTEXT_QUEUE_SIZE": "-5", "OTEL_EXPORTER_CONTEXT_INSECURE": "maybe"},
        {"OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO": "2", "OTEL_EXPORTER_CONTEXT_REDACT": "email,nonsense"},
    ],
    ids=["well-formed", "timeout-abc", "negative-queue-and-bad-bool", "ratio-and-unknown-pattern"],
)
def test_beside_another_exporter(local_api, client, unused_tcp_port, malformed):
    # A malformed setting of ours must never stop tracing: one warning naming it, then its default;
    # the OTLP exporter beside ours keeps working too.
    received: list[int] = []

    async def sink(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    with _serve(sink, unused_tcp_port):
        result = run_app(
            "seed_chain.py",
            local_api,
            OTEL_TRACES_EXPORTER="otlp,context",
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{unused_tcp_port}/v1/traces",
            **malformed,
        )
    assert received, "the OTLP exporter beside ours received nothing"
    (thread,) = read_threads(client)
    assert texts(thread)[-1][2] == "Rainbow Threads"
    assert "Traceback" not in result.stderr and "Failed to auto initialize" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("otel-context: OTEL_EXPORTER_CONTEXT_")]
    assert len(warnings) == len(malformed), result.stderr
    for name, value in malformed.items():  # each names the variable and the bad value
        bad = value.split(",")[-1]
        assert any(name in line and bad in line for line in warnings), (name, warnings)


def test_langchain_core_apps_are_instrumented_whatever_the_exporter(local_api, client, unused_tcp_port):
    # The sidecar path: OTLP to a Collector only, no `context` exporter in this process, and no
    # `langchain` package (only `langchain-core`): the LangChain spans must still leave the app.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    python = ensure_env(
        "langchain-core-only", [*RUNTIME, "langchain-core>=1,<2", "opentelemetry-exporter-otlp-proto-http"]
    )
    assert subprocess.run([python, "-c", "import langchain"], capture_output=True).returncode != 0
    bodies: list[bytes] = []

    async def sink(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    with _serve(sink, unused_tcp_port):
        result = run_app(
            "seed_chain.py",
            local_api,
            python=python,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{unused_tcp_port}/v1/traces",
        )
    kinds = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    kinds += [a.value.string_value for a in span.attributes if a.key == "traceloop.span.kind"]
    assert "workflow" in kinds, "no LangChain span reached the OTLP endpoint"
    assert read_threads(client) == []  # nothing went to Context from the app itself
    assert "Traceback" not in result.stderr


SERVER_MODULES = ("grpc", "google.protobuf", "opentelemetry.proto", "aiohttp")  # the extras' imports
LOADED_BY_THE_EXPORTER = (  # which of them the in-process path imports (context-python installs aiohttp itself)
    "import sys; from otel_context.exporter import ContextSpanExporter; import otel_context.autoconfig; "
    "ContextSpanExporter(register_metrics=False).shutdown(); "
    f"print(sorted(m for m in {SERVER_MODULES!r} if m in sys.modules))"
)


def test_the_core_install_exports_in_process_and_names_the_extra_serve_needs(local_api, client, tmp_path):
    # `pip install otel-context` and nothing else: enough for OTEL_TRACES_EXPORTER=context, and lean.
    python = ensure_env("core-only", RUNTIME)
    for module in ("grpc", "google.protobuf", "opentelemetry.proto"):
        absent = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
        assert absent.returncode != 0, f"{module} is installed by the core dependencies alone"
    loaded = subprocess.run([python, "-c", LOADED_BY_THE_EXPORTER], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr

    result = run_app("seed_chain.py", local_api, python=python)
    assert "Rainbow Threads" in result.stdout
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]

    serve = subprocess.run(
        [python.with_name("otel-context"), "serve", "--port", "0", "--grpc-port", "-1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode != 0
    assert serve.stderr.splitlines() == [
        "otel-context serve needs the 'sidecar' extra (grpc is not installed): pip install 'otel-context[sidecar]'"
    ]
    assert list(tmp_path.iterdir()) == []


class _serve:
    """A throwaway OTLP/HTTP sink on a background loop."""

    def __init__(self, handler, port: int) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/traces", handler)
        self.runner = web.AppRunner(app)
        self.port = port
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        import asyncio

        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_startup_file_runs_one_named_function_and_loads_nothing_else():
    """`otel_context_startup.pth` runs in every interpreter of the environment: it must stay one import
    of `otel_context.startup.apply_defaults`, installed as shipped, and must not load the OTel SDK."""
    shipped = (REPO / "otel_context_startup.pth").read_text()
    assert shipped == "import otel_context.startup; otel_context.startup.apply_defaults()\n"
    installed = [
        Path(p) / "otel_context_startup.pth" for p in sys.path if (Path(p) / "otel_context_startup.pth").exists()
    ]
    assert installed, "otel_context_startup.pth is not installed in site-packages"
    assert installed[0].read_text() == shipped, "the installed .pth is stale: reinstall the package"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    probe = (
        "import os, sys; "
        "print(os.environ.get('OTEL_METRICS_EXPORTER'), any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "OTEL_TRACES_EXPORTER": "otlp, Context"},
        capture_output=True,
        text=True,
    )
    assert ran.stdout.split() == ["none", "False"], ran.stderr
    untouched = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert untouched.stdout.split() == ["None", "False"], untouched.stderr
