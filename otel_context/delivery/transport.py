"""A lean azure-core transport for `context-python`: one keep-alive `http.client` connection.

The SDK's default transport goes through `requests`, which spends most of an upload's CPU on
per-request work an uploader never needs (environment proxy scans, netrc look-ups, adapters); the
uploads run in the app's own process, so that CPU competes with the app. This transport does only
what an upload needs: one persistent connection per worker (TLS verified with the system's CA
store), proxies read from the environment once, and azure-core's own response type (`rest_response`),
so the SDK above it behaves exactly as with its default.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse

# The one private azure-core name in this package, used by `rest_response` only (why, and what breaks when
# it changes: its docstring). Imported with this module, on the app's thread: imported first by an upload
# worker, it could hold an import lock across a pre-fork server's fork (see `_ForkGuard`). Its absence must
# not stop the exporter from loading (that would stop every exporter of the SDK's set-up).
try:
    from azure.core.rest._http_response_impl import (
        RestHttpClientTransportResponse as _RestHttpClientTransportResponse,
    )
except ImportError:  # pragma: no cover - an azure-core release that moved it
    _RestHttpClientTransportResponse = None


class HttpClientTransport(HttpTransport):
    """Not thread-safe by design: the sender gives each worker thread a client of its own."""

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
        self._conn: http.client.HTTPConnection | None = None
        self._target: tuple[str, str, int] | None = None
        self._ssl = ssl_context

    def open(self) -> None:
        pass

    def proxied(self, url: str) -> bool:
        """Whether requests to `url` go through a proxy from the environment."""
        scheme, host, _port = _target(urlsplit(url))
        return not urllib.request.proxy_bypass(host) and bool(self.proxies.get(scheme))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def abort(self) -> None:
        """From another thread: end a request in flight now (`shutdown` wakes a blocked `recv`, `close` does not)."""
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> HttpClientTransport:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def send(self, request: Any, **kwargs: Any) -> HttpResponse:
        if _RestHttpClientTransportResponse is None:  # before anything is sent: see rest_response
            raise ServiceRequestError(MOVED)
        parts = urlsplit(request.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = request.content if hasattr(request, "content") else request.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = dict(request.headers)
        timeout = kwargs.get("read_timeout") or kwargs.get("connection_timeout") or self.timeout_s
        reused = self._conn is not None and self._target == _target(parts)
        for attempt in (1, 2):
            conn = self._connection(parts, timeout)
            try:
                if conn.sock is None:
                    with FORK_GUARD:  # a TLS handshake must not be cut in two by a fork
                        conn.connect()
                conn.request(request.method, path, body=body, headers=headers)
            except OSError as error:
                self.close()
                raise ServiceRequestError(error, error=error) from error
            try:
                raw = conn.getresponse()
                response = rest_response(request, raw)
                response.read()  # the connection is free for the next request only once the body is read
                if raw.will_close:
                    self.close()
                return response
            except (OSError, http.client.HTTPException) as error:
                self.close()
                # A kept-alive connection the server closed while idle fails on first use: try once
                # more on a fresh one (uploads are idempotent: a thread's id is stable).
                if reused and attempt == 1 and isinstance(error, (http.client.RemoteDisconnected, BrokenPipeError)):
                    reused = False
                    continue
                raise ServiceResponseError(error, error=error) from error
        raise AssertionError("unreachable")

    def _connection(self, parts: Any, timeout: float) -> http.client.HTTPConnection:
        target = _target(parts)
        if self._conn is not None and self._target == target:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            return self._conn
        self.close()
        scheme, host, port = target
        proxy = None if urllib.request.proxy_bypass(host) else self.proxies.get(scheme)
        if proxy:
            proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            proxy_host, proxy_port = proxy_parts.hostname or "", proxy_parts.port or 80
            if scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=timeout, context=self._tls()
                )
                conn.set_tunnel(host, port)
            else:
                conn = http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
                conn.set_tunnel(host, port)
        elif scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._conn, self._target = conn, target
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context()
        return self._ssl


def rest_response(request: HttpRequest, raw: http.client.HTTPResponse) -> HttpResponse:
    """azure-core's own `HttpResponse` over an `http.client` answer, the response of every client-path request.

    `context-python` sends `azure.core.rest.HttpRequest`s, so its pipeline wants an `azure.core.rest.HttpResponse`
    back, which azure-core publishes only as an abstract base: the concrete one over `http.client`
    (`RestHttpClientTransportResponse`) is in the private `azure.core.rest._http_response_impl`, as the response
    types of azure-core's own transports are. Using it keeps the client exactly as with its default transport
    (text decoding, `json()`, its errors, the back-compat `body()`), which a copy would have to follow release by
    release. azure-core is bounded only by context-python's `<2`: a release that moves or reshapes it breaks the
    client path (ratings, proxied uploads: each fails as a transport error, counted and retried), not the lean
    thread uploads, which never build one. `tests/e2e/test_lean_upload.py::test_the_private_azure_core_response_
    keeps_its_shape` fails first, naming it. `HttpClientTransport.send`, its one caller, checks that the class
    exists before it sends anything (a request whose answer could not be read would leave the connection unusable).
    """
    return _RestHttpClientTransportResponse(request=request, internal_response=raw)


MOVED = (
    "azure-core no longer has azure.core.rest._http_response_impl.RestHttpClientTransportResponse, which "
    "otel-context's client path (ratings, proxied uploads) needs: pin azure-core to an older release or upgrade"
)


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


@dataclass(slots=True)
class RawResponse:
    """An HTTP answer as read off the socket: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class PreparedPost:
    """One request the `context-python` client built, replayed with a new body on one keep-alive socket.

    The client's pipeline builds the request once (path, query, every header including the bearer
    token, the user agent, content type and accept); this keeps its head as bytes and, per upload,
    only appends `Content-Length` and the body, no per-request objects; a batch of uploads goes out
    pipelined (`post_batch`). The answer is parsed just enough to classify it (status, headers, a
    body by length or chunks).
    Not thread-safe by design: one per worker thread, like `HttpClientTransport`.
    """

    def __init__(self, request: Any, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(request.url)
        self.target = _target(parts)
        scheme, host, port = self.target
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = 443 if scheme == "https" else 80
        lines = [f"{request.method} {path} HTTP/1.1", f"Host: {host if port == default_port else f'{host}:{port}'}"]
        lines.append("Accept-Encoding: identity")  # as http.client says it
        lines += [f"{name}: {value}" for name, value in request.headers.items() if name.lower() != "content-length"]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._timeout = timeout_s
        self._https = scheme == "https"
        self._aborted = False

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def abort(self) -> None:
        """From another thread: end a request in flight now (and do not try it again on a fresh socket)."""
        self._aborted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def post(self, body: bytes, timeout_s: float | None = None) -> RawResponse:
        """Send `body`; the answer. Raises `ServiceRequestError` / `ServiceResponseError` as the client would."""
        (answer,) = self.post_batch([body], timeout_s)
        if isinstance(answer, AzureError):
            raise answer
        return answer

    def post_batch(self, bodies: Sequence[bytes], timeout_s: float | None = None) -> list[RawResponse | AzureError]:
        """Send every body, pipelined; one answer (or the error that stands for it) per body, in order.

        HTTP/1.1 pipelining: a window of requests goes out in one `sendall`, then their answers are read
        in order, so a batch of uploads costs a few system calls and GIL hand-offs instead of two of
        each per upload (the app's threads wait for the GIL at every one). A window is at most
        `PIPELINE_WINDOW_BYTES` of requests (a larger body goes alone): the answers are small, so neither
        side can fill its buffers waiting for the other. A server that answers some and closes (or says
        `Connection: close`) gets the rest again on a fresh connection; uploads are idempotent (a thread's
        id is stable). A round that gets no answer at all ends the batch: the rest fail as `post` would.
        """
        timeout = timeout_s or self.timeout_s
        answers: list[RawResponse | AzureError | None] = [None] * len(bodies)
        pending = list(range(len(bodies)))
        self._aborted = False
        may_reopen = True  # once per batch: a kept-alive socket the server closed while idle
        while pending:
            window = _window(pending, bodies)
            reused = self._sock is not None
            try:
                sock = self._connect(timeout)
                sock.sendall(b"".join(self._message(bodies[index]) for index in window))
            except OSError as error:
                self.close()
                return _fail(answers, pending, ServiceRequestError(error, error=error))
            answered, keep, failure = 0, True, None
            buffer = b""
            try:
                for index in window:
                    answers[index], keep, buffer = _read_response(sock, buffer)
                    answered += 1
                    if not keep:
                        break
            except (OSError, http.client.HTTPException) as error:
                failure = error
            if failure is not None or not keep or buffer:  # `buffer`: bytes no request asked for
                self.close()
            pending = pending[answered:]
            if failure is not None and answered == 0:
                # A kept-alive connection the server closed while idle fails on first use: try once more
                # on a fresh one. A reset is an answer lost (retried by the queue, counted), not an idle close.
                if reused and may_reopen and isinstance(failure, _IDLE_CLOSED) and not self._aborted:
                    may_reopen = False
                    continue
                return _fail(answers, pending, ServiceResponseError(failure, error=failure))
            if self._aborted:
                return _fail(answers, pending, ServiceRequestError("the upload was cut short by a shutdown"))
        return answers  # type: ignore[return-value]

    def _message(self, body: bytes) -> bytes:
        return b"".join((self._head, str(len(body)).encode(), b"\r\n\r\n", body))

    def _connect(self, timeout: float) -> socket.socket:
        sock = self._sock
        if sock is not None:
            if timeout != self._timeout:
                sock.settimeout(timeout)
                self._timeout = timeout
            return sock
        _scheme, host, port = self.target
        sock = socket.create_connection((host, port), timeout)
        self._timeout = timeout
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._https:
            try:
                with FORK_GUARD:  # a TLS handshake must not be cut in two by a fork
                    sock = tls_context().wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        return sock


_MAX_HEAD = 65536
# As `HttpClientTransport`: a reset is an answer lost (retried by the queue, counted), not an idle close.
_IDLE_CLOSED = (http.client.RemoteDisconnected, BrokenPipeError)
# Requests written before their answers are read: small enough to sit in the socket buffers of both
# ends, so a server that answers before reading on never waits for a client still writing.
PIPELINE_WINDOW_BYTES = 65536


def _window(pending: list[int], bodies: Sequence[bytes]) -> list[int]:
    """The next requests to write together: up to `PIPELINE_WINDOW_BYTES` of bodies, at least one."""
    size = 0
    for count, index in enumerate(pending):
        size += len(bodies[index])
        if size > PIPELINE_WINDOW_BYTES and count:
            return pending[:count]
    return pending


def _fail(
    answers: list[RawResponse | AzureError | None], pending: list[int], error: AzureError
) -> list[RawResponse | AzureError]:
    for index in pending:
        answers[index] = error
    return answers  # type: ignore[return-value]


def _read_response(sock: socket.socket, buffer: bytes) -> tuple[RawResponse, bool, bytes]:
    """Read one HTTP/1.x answer after what `buffer` holds; the response, whether the connection stays open,
    and the bytes read past it (the start of the next pipelined answer)."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            chunk = sock.recv(65536)
            if not chunk:
                if buffer:
                    raise http.client.IncompleteRead(buffer)
                raise http.client.RemoteDisconnected("Remote end closed connection without response")
            buffer += chunk
            if len(buffer) > _MAX_HEAD and buffer.find(b"\r\n\r\n") < 0:
                raise http.client.LineTooLong("header")
            end = buffer.find(b"\r\n\r\n")
        head, buffer = buffer[:end].decode("latin-1"), buffer[end + 4 :]
        status_line, _, header_text = head.partition("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/") or not code.isdigit():
            raise http.client.BadStatusLine(status_line)
        status = int(code)
        headers: dict[str, str] = {}
        for line in header_text.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            continue
        break
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
    if status in (204, 304):
        return RawResponse(status, headers, b""), keep, buffer
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, buffer = _read_chunked(sock, buffer)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise http.client.HTTPException(f"bad Content-Length {headers['content-length']!r}") from None
        while len(buffer) < length:
            chunk = sock.recv(max(65536, length - len(buffer)))
            if not chunk:
                raise http.client.IncompleteRead(buffer, length - len(buffer))
            buffer += chunk
        body, buffer = buffer[:length], buffer[length:]
    else:  # delimited by the server closing the connection
        parts = [buffer]
        while chunk := sock.recv(65536):
            parts.append(chunk)
        body, keep, buffer = b"".join(parts), False, b""
    return RawResponse(status, headers, body), keep, buffer


def _read_chunked(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    """A chunked body; the body and what is left in the buffer."""
    parts = []

    def fill(need: int) -> None:
        nonlocal buffer
        while len(buffer) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise http.client.IncompleteRead(b"".join(parts))
            buffer += chunk

    while True:
        line_end = buffer.find(b"\r\n")
        while line_end < 0:
            fill(len(buffer) + 1)
            line_end = buffer.find(b"\r\n")
        size_text = buffer[:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {size_text!r}") from None
        buffer = buffer[line_end + 2 :]
        if size == 0:
            while True:  # trailers, up to the empty line
                line_end = buffer.find(b"\r\n")
                while line_end < 0:
                    fill(len(buffer) + 1)
                    line_end = buffer.find(b"\r\n")
                line, buffer = buffer[:line_end], buffer[line_end + 2 :]
                if not line:
                    return b"".join(parts), buffer
        fill(size + 2)
        parts.append(buffer[:size])
        buffer = buffer[size + 2 :]
