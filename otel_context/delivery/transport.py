"""Sending the requests `context-python` builds: one keep-alive `http.client` connection per upload worker.

The client builds every request (its pipeline: bearer-token policy, headers, user agent, URL and query) and
sends none (`CapturingTransport`); `HttpClientTransport.exchange` sends it and reads the answer with the
standard library's HTTP/1.1 implementation, never with parsing of our own. The SDK's default transport goes
through `requests`, which spends most of an upload's CPU on per-request work an uploader never needs
(environment proxy scans, netrc look-ups, adapters); the uploads run in the app's own process, so that CPU
competes with the app. `http.client` is the cheapest maintained choice measured (CPU per request, one at a
time on loopback): `urllib3` (installed with `requests`, and running `http.client` underneath) and aiohttp's
client each cost about twice as much, h11 about the same. It still costs several times the CPU of the
hand-written pipelined path it replaced, whose parsing could not be trusted.

The rules, each because Context appends a thread POST's messages (a POST is not idempotent):
- **One request at a time**, no pipelining (RFC 9112 §9.3.2: a client should not pipeline after a
  non-idempotent method; an unanswered pipelined POST is one more ambiguous append).
- **A deadline per attempt**: connecting, writing and reading the whole answer end within the timeout (socket
  timeouts shortened to what is left before every read, so an answer that trickles in cannot outlast it).
- **Bounded answers**: a POST or PATCH answer above `ANSWER_LIMIT`, a read-back above `READ_BACK_LIMIT`, is an
  error and its connection is closed, whatever its framing (length, chunks, or the server's close).
- **A connection is reused only when it is known clean**: never after an error or an answer not read to its
  end; never when it has been idle longer than `IDLE_REUSE_S` (the server may be closing it as we write);
  never when it has something to read before we asked (an answer nobody requested, or the server's close):
  such an answer would otherwise be taken for the next request's.
- **What was written is told apart from what was not**: `NotSent` (the request was not wholly written: the
  server cannot have acted on it) against `NoAnswer` (written, and no complete answer: it may have). Only an
  idempotent request (`IDEMPOTENT_METHODS`) is written again on its own, once, when a reused connection
  turns out closed; a POST never is.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import os
import select
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline.transport import HttpTransport

ANSWER_LIMIT = 1 << 20  # bytes: a POST or PATCH answer is a few hundred bytes; past 1 MiB it is not the API's
READ_BACK_LIMIT = 64 << 20  # bytes: a thread read back (`GET /api/v1/conversations/{id}`) with all its messages
IDLE_REUSE_S = 4.0  # a kept-alive connection idle longer is closed, not reused (servers time out at 5 s and up)
# Written again on a fresh connection when a reused one turns out closed: repeating them changes nothing
# (a rating PATCH sets a value at an index; a GET reads).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PATCH"})


class NotSent(Exception):
    """The request was not wholly written (no connection, a failed TLS handshake, a write that failed)."""


class NoAnswer(Exception):
    """The request was written and no complete answer came: a timeout, a reset, a close, an answer too large."""


class AnswerTooLarge(http.client.HTTPException):
    """The answer's body is larger than the request's limit."""


@dataclass(slots=True)
class Answer:
    """An HTTP answer read whole: its status, headers (case-insensitive `get`) and body."""

    status: int
    headers: Message
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request as the client's pipeline built it: method, where it goes, its path and headers.

    `headers` leave out `Content-Length` (written per body by `http.client`) and let `http.client` add `Host`
    and `Accept-Encoding: identity`, as it does for any request.
    """

    method: str
    target: tuple[str, str, int]  # scheme, host, port
    path: str
    headers: dict[str, str] = field(repr=False)  # the bearer token is one of them
    body: bytes | None = None

    @classmethod
    def of(cls, request: Any) -> PreparedRequest:
        """From the `azure.core` request `CapturingTransport` caught."""
        parts = urlsplit(request.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            name: value for name, value in request.headers.items() if name.lower() not in ("content-length", "host")
        }
        body = request.content if hasattr(request, "content") else request.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        return cls(request.method, _target(parts), path, headers, body if body else None)


class HttpClientTransport:
    """One keep-alive `http.client` connection, one request at a time. Not thread-safe by design: each upload
    worker has its own (`abort` and `close` may come from another thread)."""

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        proxies: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: made once, on the thread that builds the exporter (see `tls_context`)."""
        self.timeout_s = timeout_s
        self.proxies = urllib.request.getproxies() if proxies is None else proxies
        self._conn: _Connection | _TLSConnection | None = None
        self._target: tuple[str, str, int] | None = None
        self._idle_since = 0.0
        self._ssl = ssl_context
        self._aborted = False

    def exchange(
        self,
        request: PreparedRequest,
        body: bytes | None = None,
        *,
        limit: int = ANSWER_LIMIT,
        timeout_s: float | None = None,
    ) -> Answer:
        """Send `request` with `body` (default: the request's own) and read its whole answer, within one deadline.

        Raises `NotSent` when the request was not wholly written, `NoAnswer` when it was and no complete answer
        (of at most `limit` bytes) came. Never writes a request twice, but for an idempotent one whose reused
        connection turns out closed by the server: that one goes once more on a fresh connection.
        """
        self._aborted = False
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        body = request.body if body is None else body
        try:
            return self._attempt(request, body, limit, deadline)
        except _Stale as stale:
            if request.method not in IDEMPOTENT_METHODS or self._aborted:
                raise NoAnswer(stale.error) from stale.error
            return self._attempt(request, body, limit, deadline)

    def _attempt(self, request: PreparedRequest, body: bytes | None, limit: int, deadline: float) -> Answer:
        reused = False
        try:
            conn, reused = self._connection(request.target, deadline)
            if conn.sock is None:
                conn.timeout = _left(deadline)
                with FORK_GUARD:  # a TLS handshake must not be cut in two by a fork
                    conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: send it
            if self._aborted:  # while connecting
                raise ConnectionAbortedError("cut short by a shutdown")
            conn.sock.settimeout(_left(deadline))
            conn.response_class = functools.partial(_BoundedResponse, limit=limit, deadline=deadline)
            headers = request.headers
            if body is not None:
                headers = {**headers, "Content-Length": str(len(body))}
                conn.body = body  # written with the head (`_OneWrite`)
            conn.request(request.method, request.path, headers=headers)
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.close()
            raise NotSent(error) from error
        try:
            raw = conn.getresponse()
            answer = Answer(raw.status, raw.headers, raw.read())
        except (OSError, http.client.HTTPException) as error:
            self.close()
            if reused and isinstance(error, _CLOSED_WHILE_IDLE):
                raise _Stale(error) from error
            raise NoAnswer(error) from error
        if raw.will_close or not raw.isclosed():
            self.close()
        else:
            self._idle_since = time.monotonic()
        return answer

    def _connection(self, target: tuple[str, str, int], deadline: float) -> tuple[_Connection | _TLSConnection, bool]:
        """The kept-alive connection when it is clean, else a new one (not yet connected); and whether reused."""
        conn = self._conn
        if (
            conn is not None
            and self._target == target
            and conn.sock is not None
            and time.monotonic() - self._idle_since <= IDLE_REUSE_S
            and not _has_input(conn.sock)
        ):
            return conn, True
        self.close()
        scheme, host, port = target
        timeout = _left(deadline)
        proxy = None if urllib.request.proxy_bypass(host) else self.proxies.get(scheme)
        if proxy:
            proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            proxy_host, proxy_port = proxy_parts.hostname or "", proxy_parts.port or 80
            if scheme == "https":
                conn = _TLSConnection(proxy_host, proxy_port, timeout=timeout, context=self._tls())
            else:
                conn = _Connection(proxy_host, proxy_port, timeout=timeout)
            conn.set_tunnel(host, port)
        elif scheme == "https":
            conn = _TLSConnection(host, port, timeout=timeout, context=self._tls())
        else:
            conn = _Connection(host, port, timeout=timeout)
        self._conn, self._target = conn, target
        return conn, False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def abort(self) -> None:
        """From another thread: end a request in flight now (`shutdown` wakes a blocked `recv`, `close` does not),
        and do not write it again."""
        self._aborted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context()
        return self._ssl


class _OneWrite:
    """`http.client` writes a request's head and its body with two sends: joined, they leave in one segment
    and wake the server once (and cost one system call, not two)."""

    body: bytes | None = None  # set just before `request()`, written with the head

    def send(self, data: Any) -> None:
        body, self.body = self.body, None
        super().send(data + body if body is not None else data)  # type: ignore[misc]


class _Connection(_OneWrite, http.client.HTTPConnection):
    pass


class _TLSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class _Stale(Exception):
    """A reused connection that failed as one the server closed while idle does (no answer, or a reset)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# What a kept-alive connection the server closed while idle gives on first use (a reset too, when the close
# crossed the request on the wire).
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, ConnectionError)


def _left(deadline: float) -> float:
    """Seconds left before `deadline`; a `TimeoutError` when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return left


def _has_input(sock: socket.socket) -> bool:
    """Whether an idle connection has anything to read (bytes nobody asked for, or the server's close)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _DeadlineReader(io.RawIOBase):
    """A socket's input that gives up at a deadline: each read waits at most for the time left.

    Over the socket's own `makefile` stream, which keeps the socket open for the answer after `http.client`
    closes a connection whose answer ends with the server's close.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._stream = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_left(self._deadline))
        return self._stream.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


class _DeadlineSocket:
    """What `http.client.HTTPResponse` is given instead of the socket: it only calls `makefile("rb")`."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _BoundedResponse(http.client.HTTPResponse):
    """`http.client`'s answer, read within the attempt's deadline, its body refused past `limit` bytes."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        limit: int,
        deadline: float,
    ) -> None:
        super().__init__(_DeadlineSocket(sock, deadline), debuglevel, method, url)  # type: ignore[arg-type]
        self.limit = limit

    def read(self, amt: int | None = None) -> bytes:
        if amt is not None:
            return super().read(amt)
        if self.length is not None:  # Content-Length: http.client reads exactly that, or raises IncompleteRead
            if self.length > self.limit:
                raise AnswerTooLarge(f"the answer is {self.length} bytes, more than {self.limit}")
            return super().read()
        parts, size = [], 0  # chunked, or delimited by the server's close: read to the end, up to the limit
        while part := super().read(min(65536, self.limit + 1 - size)):
            parts.append(part)
            size += len(part)
            if size > self.limit:
                raise AnswerTooLarge(f"the answer is more than {self.limit} bytes")
        return b"".join(parts)


class _ForkGuard:
    """Held while an upload worker builds a client or opens a connection; a `fork()` waits for it.

    Building a client and opening a (TLS) connection take locks that are not the worker's own:
    OpenSSL's, `functools.cached_property`'s inside `platform` (azure-core's user agent), the import
    system's. A pre-fork server (gunicorn `--preload`) that forks at that instant leaves the child a
    lock no thread will ever release, and every upload of that child blocked on it (seen in the
    gunicorn test, both ways). Holding this guard makes the fork wait the few milliseconds instead.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=self.lock.acquire, after_in_parent=self.lock.release, after_in_child=self.lock.release
            )

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


FORK_GUARD = _ForkGuard()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """TLS settings for uploads (system CA store, verified), loaded once per process (~100 ms of CPU).

    Made by the thread that builds the exporter, never first by an upload worker: OpenSSL's locks
    are process-wide, and a worker creating a context at the instant a pre-fork server forks (gunicorn
    `--preload`) leaves the child with a lock nobody will ever release, and every upload of the child
    blocked on it (seen in the gunicorn test before this was moved).
    """
    return ssl.create_default_context()


def _target(parts: Any) -> tuple[str, str, int]:
    scheme = parts.scheme or "https"
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)


class RequestCaptured(Exception):
    """Raised by `CapturingTransport` to stop the client's pipeline once its request is built."""

    def __init__(self, request: Any) -> None:
        super().__init__("request captured")
        self.request = request


class CapturingTransport(HttpTransport):
    """Sends nothing: hands the request the client's whole pipeline built back to the caller."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> CapturingTransport:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> Any:
        raise RequestCaptured(request)
