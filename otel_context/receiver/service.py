"""`otel-context serve`: run the OTLP receivers and the pipeline until SIGTERM, then flush (or spool).

With `--workers N`, a small supervisor starts N worker processes that listen on the same ports
(SO_REUSEPORT: the kernel spreads connections over them), so one machine's cores are used; it restarts
a worker that dies and passes SIGTERM on. The workers share the spool directory (each owns its rows; a
dead worker's rows are claimed) and the session book (`<state-dir>/sessions.db`, or Redis), and pass
each other the spans of the traces they own (`TraceRouter`), so a trace is assembled in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import io
import logging
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import zlib
from collections.abc import Iterable

import grpc
from aiohttp import web

from .. import serving
from ..config import ExporterSettings, ReceiverSettings, boolean, read_env
from ..environment_variables import OTEL_CONTEXT_SERVE_TRACE_ROUTING, OTEL_CONTEXT_SERVE_WORKER
from ..model import SpanRecord
from ..pipeline import Pipeline
from .durable import DurableIntake
from .grpc import create_grpc_server
from .http import create_receiver_app
from .otlp_io import OtlpIntake
from .wal import WriteAheadLog

_logger = logging.getLogger(__name__)
TICK_S = 0.25


class Sidecar:
    """The receivers and their pipeline, on the running asyncio loop."""

    def __init__(self, receiver: ReceiverSettings, delivery: ExporterSettings, *, reuse_port: bool = False) -> None:
        """`reuse_port`: a worker of `serve --workers`, sharing its ports with the other workers."""
        self.receiver = receiver
        self.delivery = delivery
        self.reuse_port = reuse_port
        sessions = delivery.session_db or os.path.join(receiver.state_dir, "sessions.db")
        self.pipeline = Pipeline(delivery, settle_s=receiver.settle_s, push_back=True, session_db=sessions)
        # With a spool, acknowledge only what is durable: requests go through a write-ahead log beside it.
        self.durable = DurableIntake(self.pipeline, WriteAheadLog(delivery.spool_dir)) if delivery.spool_dir else None
        self.intake = OtlpIntake(self.pipeline, receiver, self.durable)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

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
        self._ticker = asyncio.create_task(self._tick())

    def describe(self) -> str:
        where = f"OTLP/HTTP on {self.http_url}/v1/traces"
        if self.grpc_port is not None:
            where += f", OTLP/gRPC on {self.receiver.host}:{self.grpc_port}"
        return f"{where}, delivering to {self.delivery.endpoint}"

    async def stop(self, timeout_s: float = 20.0) -> int:
        """Stop receiving, build pending roots, deliver within `timeout_s`; threads left undelivered."""
        self._stopping.set()
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._ticker is not None:
            await self._ticker
        self.intake.close()
        shutdown = self.pipeline.shutdown if self.durable is None else self.durable.shutdown
        return await asyncio.get_running_loop().run_in_executor(None, shutdown, timeout_s)

    async def _tick(self) -> None:
        """Release roots whose settle time passed; the receivers themselves only buffer and convert."""
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TICK_S)
            try:
                if self.durable is None:
                    self.pipeline.tick()
                else:
                    self.durable.tick()
            except Exception:
                _logger.exception("otel-context serve: tick failed")


async def serve(receiver: ReceiverSettings, delivery: ExporterSettings, shutdown_timeout_s: float = 20.0) -> int:
    """Serve until SIGTERM or SIGINT; returns the number of threads left undelivered."""
    worker = os.environ.pop(OTEL_CONTEXT_SERVE_WORKER, None)
    name = f"otel-context serve (worker {worker.split(':')[0]})" if worker else "otel-context serve"
    sidecar = Sidecar(receiver, delivery, reuse_port=worker is not None)
    sidecar.pipeline.counters.register_metrics()
    router = None
    if worker:
        index, _, count, directory = worker.split(":", 3)
        if read_env(OTEL_CONTEXT_SERVE_TRACE_ROUTING, boolean, True):
            router = TraceRouter(sidecar.pipeline, int(index), int(count), directory)
            await router.start()
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
    if router is not None:
        await router.close()
    left = await sidecar.stop(shutdown_timeout_s)
    where = " (kept in the spool)" if delivery.spool_dir and left else ""
    if worker:
        print(f"{name}: received {sidecar.pipeline.counters.get('spans_received')} span(s)", flush=True)
    print(f"{name}: stopped, {left} thread(s) undelivered{where}", flush=True)
    return left


class TraceRouter:
    """In a worker of `serve --workers`: every span goes to the worker that owns its trace.

    The kernel hands connections, not traces, to workers, and a Collector may send a trace's spans
    in two requests over two connections. Each trace id has one owning worker (a hash); spans of
    traces owned by another worker are passed to it over a Unix socket (in a private directory of the
    supervisor), on the event loop (threads would fight the loop for the GIL), so a trace is
    assembled whole. A peer that cannot take them (restarting, stopping) gets nothing: they are
    assembled here instead, never lost. Like the buffer itself, spans on their way to a peer live in
    memory until the sidecar's write-ahead log.
    """

    def __init__(self, pipeline: Pipeline, index: int, count: int, directory: str) -> None:
        self.pipeline, self.index, self.count, self.directory = pipeline, index, count, directory
        self._accept_here = pipeline.accept
        pipeline.accept = self.accept  # type: ignore[method-assign]
        self._loop = asyncio.get_running_loop()
        self._outboxes: dict[int, asyncio.Queue[list[SpanRecord]]] = {}
        self._senders: list[asyncio.Task[None]] = []
        self._server: asyncio.AbstractServer | None = None
        self._closing = False

    async def start(self) -> None:
        path = self._path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by this worker's previous life
        self._server = await asyncio.start_unix_server(self._peer, path=path)

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index}.sock")

    def owner(self, trace_id: int) -> int:
        # a hash of every bit: some generators fix bits (odd ids, a timestamp in the high ones)
        return zlib.crc32(trace_id.to_bytes(16, "big")) % self.count + 1

    def accept(self, records: Iterable[SpanRecord], **kwargs: object) -> bool:
        """The pipeline's `accept`: spans of this worker's traces here, the others queued for their owners."""
        mine: list[SpanRecord] = []
        theirs: dict[int, list[SpanRecord]] = {}
        for record in records:
            owner = self.owner(record.trace_id)
            (mine if owner == self.index else theirs.setdefault(owner, [])).append(record)
        for owner, batch in theirs.items():
            if self._closing:
                mine += batch
            else:
                self._loop.call_soon_threadsafe(self._enqueue, owner, batch)
        return self._accept_here(mine, **kwargs) if mine else True  # type: ignore[arg-type]

    def _enqueue(self, owner: int, batch: list[SpanRecord]) -> None:
        outbox = self._outboxes.get(owner)
        if outbox is None:
            outbox = self._outboxes[owner] = asyncio.Queue()
            self._senders.append(self._loop.create_task(self._send_to(owner, outbox)))
        outbox.put_nowait(batch)

    async def _send_to(self, owner: int, outbox: asyncio.Queue[list[SpanRecord]]) -> None:
        """Hand what waits to worker `owner`, in one message; what it cannot take is assembled here."""
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        while True:
            batch = await outbox.get()
            while not outbox.empty():
                batch += outbox.get_nowait()
            taken = False
            try:
                for _ in range(2):  # a connection to a peer's previous life fails once: reconnect
                    try:
                        if writer is None:
                            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self._path(owner)), 5)
                        payload = _dumps(batch)
                        writer.write(len(payload).to_bytes(4, "big") + payload)
                        await writer.drain()
                        assert reader is not None
                        taken = await asyncio.wait_for(reader.readexactly(1), 10) == b"1"
                        break
                    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                        if writer is not None:
                            writer.close()
                        reader = writer = None
            finally:
                if not taken:  # the owner is restarting or stopping: assembled here rather than lost
                    self._keep(batch, owner)

    def _keep(self, batch: list[SpanRecord], owner: int) -> None:
        try:
            self._accept_here(batch)
        except Exception:
            _logger.exception("otel-context serve: spans for worker %d could not be kept", owner)

    async def _peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                batch = pickle.loads(await reader.readexactly(size))  # a peer of the same user, in a 0700 dir
                answer = b"0"  # not taken: the sender keeps the spans itself
                if not self._closing:
                    try:
                        self._accept_here(batch)
                        answer = b"1"
                    except Exception:
                        _logger.exception("otel-context serve: spans from another worker could not be taken")
                writer.write(answer)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """Before the pipeline drains: what waits for a peer is assembled here, and peers keep theirs."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in self._senders:
            task.cancel()  # an unacknowledged batch in flight is kept here (the `finally` above)
        await asyncio.gather(*self._senders, return_exceptions=True)
        for owner, outbox in self._outboxes.items():
            while not outbox.empty():
                self._keep(outbox.get_nowait(), owner)


def _frozen(values: dict) -> types.MappingProxyType:
    return types.MappingProxyType(values)


def _dumps(records: list[SpanRecord]) -> bytes:
    """Span records as bytes for a peer (their attribute maps are read-only proxies, which pickle refuses)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, types.MappingProxyType: lambda m: (_frozen, (dict(m),))}
    pickler.dump(records)
    return buffer.getvalue()


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
    asyncio.run(serve(receiver, delivery))
    return 0


class Supervisor:
    """`serve --workers N`: N worker processes on the same ports; restarted when one dies, stopped on SIGTERM."""

    READY_TIMEOUT_S = 60.0
    RESTART_DELAY_S = 0.5

    def __init__(
        self, receiver: ReceiverSettings, delivery: ExporterSettings, workers: int, worker_args: list[str]
    ) -> None:
        self.receiver, self.delivery, self.count, self.worker_args = receiver, delivery, workers, worker_args
        self._reserved: list[socket.socket] = []  # port 0: the port chosen here, held for the workers
        self.http_port = self._port(receiver.port)
        self.grpc_port = self._port(receiver.grpc_port) if receiver.grpc_port is not None else None
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.sockets = tempfile.mkdtemp(prefix="otel-context-workers-")  # 0700: the workers' trace router
        self._stop = threading.Event()

    def _port(self, port: int) -> int:
        """A fixed port as is; port 0 becomes a free port every worker can bind (SO_REUSEPORT)."""
        if port:
            return port
        family = socket.AF_INET6 if ":" in self.receiver.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.receiver.host, 0))  # bound, never listening: it takes no connections
        self._reserved.append(sock)
        return sock.getsockname()[1]

    def _spawn(self, index: int) -> tuple[subprocess.Popen[bytes], int]:
        """Start worker `index`; returns it and the read end of its readiness pipe."""
        read_fd, write_fd = os.pipe()
        args = [*self.worker_args, "--workers", "1", "--port", str(self.http_port)]
        args += ["--grpc-port", str(self.grpc_port if self.grpc_port is not None else -1)]
        env = dict(os.environ, **{OTEL_CONTEXT_SERVE_WORKER: f"{index}:{write_fd}:{self.count}:{self.sockets}"})
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_context.cli", "serve", *args], env=env, pass_fds=(write_fd,)
        )
        os.close(write_fd)
        self.workers[index] = process
        return process, read_fd

    def _await_ready(self, process: subprocess.Popen[bytes], read_fd: int) -> bool:
        """True once the worker listens; False if it exited or took too long."""
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                if select.select([read_fd], [], [], 0.1)[0]:
                    return os.read(read_fd, 16).startswith(b"ready")  # b"": it exited first
            return False
        finally:
            os.close(read_fd)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        started = [self._spawn(index) for index in range(1, self.count + 1)]
        if not all(self._await_ready(process, fd) for process, fd in started):
            print("otel-context serve: a worker did not start; stopping", file=sys.stderr, flush=True)
            self._stop_workers()
            return 1
        host = self.receiver.host
        where = f"OTLP/HTTP on http://{host}:{self.http_port}/v1/traces"
        if self.grpc_port is not None:
            where += f", OTLP/gRPC on {host}:{self.grpc_port}"
        pids = ", ".join(str(p.pid) for p in self.workers.values())
        print(
            f"otel-context serve: {self.count} workers (pids {pids}), {where}, delivering to {self.delivery.endpoint}",
            flush=True,
        )
        while not self._stop.wait(0.2):
            for index, process in list(self.workers.items()):
                code = process.poll()
                if code is None or self._stop.is_set():
                    continue
                _logger.error(
                    "otel-context serve: worker %d (pid %d) exited with %s; restarting it", index, process.pid, code
                )
                time.sleep(self.RESTART_DELAY_S)
                replacement, fd = self._spawn(index)
                if self._await_ready(replacement, fd):
                    _logger.info("otel-context serve: worker %d restarted (pid %d)", index, replacement.pid)
        self._stop_workers()
        return 0

    def _stop_workers(self) -> None:
        """SIGTERM to every worker: each delivers what is queued (or leaves it in the spool) and exits."""
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for process in self.workers.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for sock in self._reserved:
            sock.close()
        shutil.rmtree(self.sockets, ignore_errors=True)
        print(f"otel-context serve: stopped {len(self.workers)} workers", flush=True)


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
