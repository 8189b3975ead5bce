"""A lean azure-core transport for `context-python`: one keep-alive `http.client` connection.

The SDK's default transport goes through `requests`, which spends most of an upload's CPU on
per-request work an uploader never needs (environment proxy scans, netrc look-ups, adapters); the
uploads run in the app's own process, so that CPU competes with the app. This transport does only
what an upload needs: one persistent connection per worker (TLS verified with the system's CA
store), proxies read from the environment once, and azure-core's own response type
(`RestHttpClientTransportResponse`), so the SDK above it behaves exactly as with its default.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse


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

    def send(self, request: Any, **kwargs: Any) -> RestHttpClientTransportResponse:
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
                response = RestHttpClientTransportResponse(request=request, internal_response=raw)
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


def tls_context() -> ssl.SSLContext:
    """TLS settings for uploads (system CA store, verified).

    Made once per exporter, on the thread that builds it, never by an upload worker: OpenSSL's locks
    are process-wide, and a worker creating a context at the instant a pre-fork server forks (gunicorn
    `--preload`) leaves the child with a lock nobody will ever release, and every upload of the child
    blocked on it (seen in the gunicorn test before this was moved).
    """
    return ssl.create_default_context()


def _target(parts: Any) -> tuple[str, str, int]:
    scheme = parts.scheme or "https"
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)
