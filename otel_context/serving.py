"""Listening sockets for the two aiohttp services (the sidecar and the local API), hardened alike.

aiohttp by default keeps a connection that never finishes its headers open for an hour, accepts as
many connections as the kernel hands it, logs a traceback for every failed `accept()` when file
descriptors run out, and writes the full request line (query string, and so `?token=`) to its access
log. Each of those is closed here, once for both services.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

FD_HEADROOM = 64  # descriptors kept free for SQLite, the spool, gRPC and the process itself
_OUT_OF_FILES = ("out of system resource", "Too many open files")


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind before serving, so port 0 yields the real port and a busy port fails in the caller.

    `reuse_port`: several processes share the port (`serve --workers`), the kernel spreading connections.
    """
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to what the open-files limit allows, so a flood meets the cap before EMFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_HEADROOM))


class _Refused(asyncio.Protocol):
    """Answers a connection over the cap by closing it at once (the client sees a reset or EOF)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class CappedSockSite(web.SockSite):
    """A `SockSite` that accepts at most `max_connections` connections at a time."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, max_connections: int, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._max_connections = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        cap = self._max_connections

        def protocol() -> asyncio.Protocol:
            return server() if len(server.connections) < cap else _Refused()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, sock=self._sock, backlog=self._backlog)


def runner(app: web.Application, header_timeout_s: float, **kwargs: Any) -> web.AppRunner:
    """An `AppRunner` whose connections close when idle, or still in their headers, past `header_timeout_s`.

    aiohttp's keep-alive timer starts when a connection opens and after each answer, and closes the
    connection if no complete request head has arrived by then: exactly a header timeout.
    """
    return web.AppRunner(app, keepalive_timeout=header_timeout_s, access_log_class=PathOnlyAccessLogger, **kwargs)


class PathOnlyAccessLogger(AbstractAccessLogger):
    """One line per request without the query string (which may carry `?token=`) or any header."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %.3fs', request.remote, request.method, request.path, response.status, time)


class ThrottledLog:
    """At most one line per `interval_s` for each kind of event, counting the ones left unsaid.

    For errors a client can cause at will (garbage bodies, wrong tokens, floods): one line per interval
    keeps the log readable and its size bounded, and never carries a traceback.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
            return
        self._last[kind] = now
        unsaid = self._unsaid.pop(kind, 0)
        more = f" ({unsaid} more like it since the last report)" if unsaid else ""
        self.logger.warning("%s%s", message, more)


class _QuietProtocolErrors(logging.Filter):
    """Turns aiohttp's ERROR traceback for each malformed request (bad request line, bad header, bad
    chunk: a 4xx the client caused) into one throttled line; real server errors pass untouched."""

    def __init__(self, log: ThrottledLog) -> None:
        super().__init__()
        self.log = log

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 400) < 500:
            reason = str(error.message).strip().splitlines()[0] if error.message else type(error).__name__
            self.log.warning("malformed-http", f"refused a malformed HTTP request: {error.code} {reason}")
            return False
        return True


def quiet_protocol_errors(log: ThrottledLog) -> None:
    """Install the filter on aiohttp's server logger, once per process."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, _QuietProtocolErrors) for existing in server_log.filters):
        server_log.addFilter(_QuietProtocolErrors(log))


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, log: ThrottledLog) -> None:
    """Report running out of file descriptors in one throttled line, not one traceback per `accept()`."""
    default = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if any(text in message or text in str(context.get("exception", "")) for text in _OUT_OF_FILES):
            log.warning("accept", f"out of file descriptors, not accepting connections for now: {message}")
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
