"""`serve --workers N`: a supervisor of N worker processes listening on the same ports (SO_REUSEPORT)."""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ..config import ExporterSettings, ReceiverSettings
from ..environment_variables import OTEL_CONTEXT_SERVE_WORKER

_logger = logging.getLogger(__name__)


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
