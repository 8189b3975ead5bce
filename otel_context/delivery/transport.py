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
import socket
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse


class HttpClientTransport(HttpTransport):
    """Not thread-safe by design: the sender gives each worker thread a client of its own."""

    def __init__(self, *, timeout_s: float = 10.0, proxies: dict[str, str] | None = None) -> None:
        self.timeout_s = timeout_s
        self.proxies = urllib.request.getproxies() if proxies is None else proxies
        self._conn: http.client.HTTPConnection | None = None
        self._target: tuple[str, str, int] | None = None
        self._ssl = ssl.create_default_context()

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
                    proxy_host, proxy_port, timeout=timeout, context=self._ssl
                )
                conn.set_tunnel(host, port)
            else:
                conn = http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
                conn.set_tunnel(host, port)
        elif scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._conn, self._target = conn, target
        return conn


def _target(parts: Any) -> tuple[str, str, int]:
    scheme = parts.scheme or "https"
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)
