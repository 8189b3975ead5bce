"""`otel-context serve`: run the OTLP receivers and the pipeline until SIGTERM, then flush (or spool).

With `--workers N`, a small supervisor starts N worker processes that listen on the same ports
(SO_REUSEPORT: the kernel spreads connections over them), so one machine's cores are used; it restarts
a worker that dies and passes SIGTERM on. The workers share the spool directory (each owns its rows; a
dead worker's rows are claimed) and the session book (`<state-dir>/sessions.db`, or Redis), and pass
each other the spans of the traces they own (`TraceRouter`), so a trace is assembled in one process;
with a spool, a worker answers a request only once each part is in its owner's write-ahead log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading

import grpc
from aiohttp import web

from .. import serving
from ..config import ExporterSettings, ReceiverSettings, boolean, read_env
from ..environment_variables import OTEL_CONTEXT_SERVE_TRACE_ROUTING, OTEL_CONTEXT_SERVE_WORKER
from ..pipeline import Pipeline
from .durable import DurableIntake
from .grpc import create_grpc_server
from .http import create_receiver_app
from .intake import OtlpIntake
from .intake_queue import IntakeQueue
from .routing import TraceRouter
from .supervisor import Supervisor
from .wal import WriteAheadLog

_logger = logging.getLogger(__name__)


class Sidecar:
    """The receivers and their pipeline, on the running asyncio loop."""

    def __init__(
        self,
        receiver: ReceiverSettings,
        delivery: ExporterSettings,
        *,
        reuse_port: bool = False,
        router: TraceRouter | None = None,
    ) -> None:
        """`reuse_port`: a worker of `serve --workers`, sharing its ports with the other workers;
        `router`: its trace routing, passing other workers the spans of their traces."""
        self.receiver = receiver
        self.delivery = delivery
        self.reuse_port = reuse_port
        self.router = router
        sessions = delivery.session_db or os.path.join(receiver.state_dir, "sessions.db")
        self.pipeline = Pipeline(delivery, settle_s=receiver.settle_s, push_back=True, session_db=sessions)
        # With a spool, acknowledge only what is durable: requests go through a write-ahead log beside it.
        # Either way the pipeline runs on the intake queue's thread, never on the event loop.
        wal = WriteAheadLog(delivery.spool_dir) if delivery.spool_dir else None
        self.durable = DurableIntake(self.pipeline, wal) if wal is not None else None
        self.jobs = IntakeQueue(self.pipeline.tick if self.durable is None else self.durable.tick)
        if self.durable is not None:
            self.durable.jobs = self.jobs
        self.intake = OtlpIntake(self.pipeline, receiver, self.durable, router, self.jobs)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.receiver.host}:{self.http_port}"

    async def start(self) -> None:
        serving.quiet_accept_errors(asyncio.get_running_loop(), self.intake.rejections)
        serving.quiet_protocol_errors(self.intake.rejections)
        # auto_decompress=False: aiohttp would otherwise inflate gzip bodies without any bound (a gzip
        # bomb); the receiver inflates them itself, stopping at max_decompressed_bytes.
        if self.durable is not None:
            self.durable.replay()  # what a crash left, before any new request is accepted
        if self.router is not None:  # after the replay: until then, peers take what they would pass here
            await self.router.start(self.intake.take)
        app = create_receiver_app(self.intake)
        self._runner = serving.runner(app, self.receiver.header_timeout_s, access_log=None, auto_decompress=False)
        await self._runner.setup()
        sock = serving.bind_socket(self.receiver.host, self.receiver.port, reuse_port=self.reuse_port)
        cap = serving.connection_cap(self.receiver.max_connections)
        await serving.CappedSockSite(self._runner, sock, cap).start()
        self.http_port = sock.getsockname()[1]
        if self.receiver.grpc_port is not None:
            # gRPC core sets SO_REUSEPORT on its listeners by default: workers share the port as they are
            self._grpc, self.grpc_port = create_grpc_server(self.intake, self.receiver.grpc_port)
            await self._grpc.start()

    def describe(self) -> str:
        where = f"OTLP/HTTP on {self.http_url}/v1/traces"
        if self.grpc_port is not None:
            where += f", OTLP/gRPC on {self.receiver.host}:{self.grpc_port}"
        return f"{where}, delivering to {self.delivery.endpoint}"

    async def stop(self, timeout_s: float = 20.0) -> int:
        """Stop receiving, build pending roots, deliver within `timeout_s`; threads left undelivered."""
        if self.router is not None:  # parts not yet taken by a peer are taken here; peers take theirs back
            await self.router.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        if self._runner is not None:
            await self._runner.cleanup()
        self.intake.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.jobs.close)  # what was answered 200 reaches the pipeline
        shutdown = self.pipeline.shutdown if self.durable is None else self.durable.shutdown
        return await loop.run_in_executor(None, shutdown, timeout_s)


async def serve(receiver: ReceiverSettings, delivery: ExporterSettings, shutdown_timeout_s: float = 20.0) -> int:
    """Serve until SIGTERM or SIGINT; returns the number of threads left undelivered."""
    worker = os.environ.pop(OTEL_CONTEXT_SERVE_WORKER, None)
    name = f"otel-context serve (worker {worker.split(':')[0]})" if worker else "otel-context serve"
    router = None
    if worker and read_env(OTEL_CONTEXT_SERVE_TRACE_ROUTING, boolean, True):
        index, _, count, directory = worker.split(":", 3)
        router = TraceRouter(int(index), int(count), directory)
    sidecar = Sidecar(receiver, delivery, reuse_port=worker is not None, router=router)
    sidecar.pipeline.counters.register_metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await sidecar.start()
    if worker:  # the supervisor prints the one "listening" line once every worker is up
        _stop_with_parent()
        ready_fd = int(worker.split(":")[1])  # after the router listens: peers may forward at once
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    else:
        print(f"{name}: {sidecar.describe()}", flush=True)
    await stop.wait()
    print(f"{name}: stopping, delivering what is queued", flush=True)
    left = await sidecar.stop(shutdown_timeout_s)
    where = " (kept in the spool)" if delivery.spool_dir and left else ""
    if worker:
        print(f"{name}: received {sidecar.pipeline.counters.get('spans_received')} span(s)", flush=True)
    print(f"{name}: stopped, {left} thread(s) undelivered{where}", flush=True)
    return left


def _stop_with_parent() -> None:
    """A worker gets SIGTERM when its supervisor dies, even by kill -9 (Linux), instead of holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run(
    receiver: ReceiverSettings, delivery: ExporterSettings, workers: int = 1, worker_args: list[str] | None = None
) -> int:
    """Serve in this process, or with `workers` > 1 supervise that many (`worker_args`: their CLI options)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    if workers > 1:
        return Supervisor(receiver, delivery, workers, worker_args or []).run()
    tune_gc()
    asyncio.run(serve(receiver, delivery))
    return 0


def tune_gc() -> None:
    """Garbage collection for a process that only serves (never an app's: the exporter leaves the app's alone).

    Every request makes thousands of short-lived containers that reference counting frees; the default
    first-generation threshold (700) scans whatever is in flight hundreds of times a second. A threshold
    of 10,000 (the older generations at their default ratios) and the start-up objects frozen out of every
    scan cost the sidecar 7 % less CPU per span (`bench.serve_cpu`, 5 rounds in turns: 167 against 181 µs);
    cycles are still collected, several times a second under load.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


class SidecarThread:
    """A `Sidecar` on its own loop in a background thread: for tests, benchmarks and embedding."""

    def __init__(self, receiver: ReceiverSettings, delivery: ExporterSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otel-context-sidecar", daemon=True)
        self._receiver, self._delivery = receiver, delivery
        self.sidecar: Sidecar | None = None

    def start(self) -> Sidecar:
        self._thread.start()

        async def make() -> Sidecar:
            sidecar = Sidecar(self._receiver, self._delivery)
            await sidecar.start()
            return sidecar

        self.sidecar = asyncio.run_coroutine_threadsafe(make(), self._loop).result(30)
        return self.sidecar

    def stop(self, timeout_s: float = 20.0) -> int:
        assert self.sidecar is not None
        left = asyncio.run_coroutine_threadsafe(self.sidecar.stop(timeout_s), self._loop).result(timeout_s + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        return left

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
