"""Sending the requests `context-python` builds: one keep-alive connection per upload worker, its answers
parsed by llhttp (Node.js's HTTP/1.1 parser, through MagicStack's `httptools`).

The client builds every request (its pipeline: bearer-token policy, headers, user agent, URL and query) and
sends none (`CapturingTransport`); `UploadTransport.exchange` writes it and reads the answer. A request is
known whole before it is written, so it goes as the client built it: its head once per built request
(`PreparedRequest.head`: request line, `Host`, the client's headers, each refused when it has what would
break the request: a line break, a control character), each upload adding only its `Content-Length` and
body, in one write. The answer is parsed by llhttp:
status line, headers, and its framing (length, chunks, or the server's close), all in C; no HTTP is parsed
by hand. The uploads run in the app's own process, so their CPU competes with the app: measured per upload
(`ContextSender.send`, one at a time on a kept-alive loopback connection to the local API, the upload
worker's CPU, side by side), this path costs 0.36-0.46 of what `http.client` cost (about 80-105 µs against
205-255), which builds each request header by header in Python and parses every answer's headers through
the `email` package; `urllib3` (`http.client` underneath) and aiohttp's client cost more than `http.client`.

The rules, each because Context appends a thread POST's messages (a POST is not idempotent):
- **One request at a time**, no pipelining (RFC 9112 §9.3.2: a client should not pipeline after a
  non-idempotent method; an unanswered pipelined POST is one more ambiguous append).
- **A deadline per attempt**: connecting, writing and reading the whole answer end within the timeout (the
  socket's timeout set to what is left before every read, so an answer that trickles in cannot outlast it).
- **Bounded answers**: a POST or PATCH answer above `ANSWER_LIMIT`, a read-back above `READ_BACK_LIMIT`, is an
  error and its connection is closed, whatever its framing (a declared length above the limit is refused
  before its body is read; chunks and a body ending at the server's close are counted as they come).
- **A connection is reused only when it is known clean**: never after an error or an answer not read to its
  end; never when the answer says the connection closes (`Connection: close`, HTTP/1.0, a body that ends at
  the close); never when bytes followed the answer in what was read; never when it has been idle longer than
  `IDLE_REUSE_S` (the server may be closing it as we write); never when it has something to read before we
  asked (an answer nobody requested, or the server's close): such an answer would otherwise be taken for the
  next request's.
- **What was written is told apart from what was not**: `NotSent` (the request was not wholly written: the
  server cannot have acted on it) against `NoAnswer` (written, and no complete answer: it may have). Only an
  idempotent request (`IDEMPOTENT_METHODS`) is written again on its own, once, when a reused connection
  turns out closed; a POST never is.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
from azure.core.pipeline.transport import HttpTransport

ANSWER_LIMIT = 1 << 20  # bytes: a POST or PATCH answer is a few hundred bytes; past 1 MiB it is not the API's
READ_BACK_LIMIT = 64 << 20  # bytes: a thread read back (`GET /api/v1/conversations/{id}`) with all its messages
IDLE_REUSE_S = 4.0  # a kept-alive connection idle longer is closed, not reused (servers time out at 5 s and up)
# Written again on a fresh connection when a reused one turns out closed: repeating them changes nothing
# (a rating PATCH sets a value at an index; a GET reads).
IDEMPOTENT_METHODS = frozenset({"GET", "PATCH"})
READ_SIZE = 65536  # bytes asked of the socket per read


class NotSent(Exception):
    """The request was not wholly written (no connection, a failed TLS handshake, a write that failed)."""


class NoAnswer(Exception):
    """The request was written and no complete answer came: a timeout, a reset, a close, an answer too large."""


class AnswerTooLarge(Exception):
    """The answer's body is larger than the request's limit."""


class IncompleteAnswer(Exception):
    """The connection ended in the middle of the answer."""


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection before its answer began (as a kept-alive connection closed while idle
    does on its next use)."""


@dataclass(slots=True)
class Answer:
    """An HTTP answer read whole: its status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request as the client's pipeline built it: method, where it goes, its path, its head, its body.

    `head` is the request line, `Host`, `Accept-Encoding: identity` (answers are read as they come, never
    decompressed) and the client's headers but `Content-Length` (written per body), each line ended, without
    the blank line that ends a head.
    """

    method: str
    target: tuple[str, str, int]  # scheme, host, port
    path: str
    head: bytes = field(repr=False)  # the bearer token is in it
    body: bytes | None = None

    @classmethod
    def of(cls, request: Any) -> PreparedRequest:
        """From the `azure.core` request `CapturingTransport` caught. Raises `ValueError` for a request that
        cannot be written as it is (a header or path with a line break or a control character)."""
        parts = urlsplit(request.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = _target(parts)
        headers = {
            name: value for name, value in request.headers.items() if name.lower() not in ("content-length", "host")
        }
        body = request.content if hasattr(request, "content") else request.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        return cls(request.method, target, path, _head(request.method, target, path, headers), body if body else None)

    def wire(self, body: bytes | None) -> bytes:
        """The whole request, ready to write: the head, `Content-Length` for `body`, and `body`."""
        if body is None:
            return self.head + (b"Content-Length: 0\r\n\r\n" if self.method in _BODY_METHODS else b"\r\n")
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # a request of these without a body says its length is 0
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a method or a header name (RFC 9110 §5.6.2)
_PATH = re.compile(r"[!-~]+")  # a request target: visible ASCII, no space (RFC 9112 §3.2)
_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")  # a header value: no line break, no control but the tab


def _head(method: str, target: tuple[str, str, int], path: str, headers: dict[str, str]) -> bytes:
    if not _TOKEN.fullmatch(method) or method in ("HEAD", "CONNECT"):  # their answers are framed otherwise
        raise ValueError(f"a method that cannot be written: {method!r}")
    if not _PATH.fullmatch(path):
        raise ValueError(f"a request path with a space, a control character or non-ASCII: {path!r}")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {_authority(target)}", "Accept-Encoding: identity"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(str(value)):
            raise ValueError(f"a header that cannot be written: {name!r}")  # never its value: it may be the token
        if name.lower() != "accept-encoding":
            lines.append(f"{name}: {value}")
    return "".join(line + "\r\n" for line in lines).encode("latin-1")


def _authority(target: tuple[str, str, int]) -> str:
    """`host[:port]` as `Host` names it: the port only when it is not the scheme's own."""
    scheme, host, port = target
    return _host(host) if port == (443 if scheme == "https" else 80) else f"{_host(host)}:{port}"


def _host(host: str) -> str:
    """A host name as a request writes it: ASCII (IDNA), an IPv6 address in brackets."""
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    return f"[{host}]" if ":" in host else host


class UploadTransport:
    """One keep-alive connection, one request at a time. Not thread-safe by design: each upload worker has its
    own (`abort` and `close` may come from another thread)."""

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
        self._sock: socket.socket | None = None
        self._reader: _Reader | None = None  # the connection's answers, one after another
        self._poller: Any = None  # whether the idle connection has input (`_has_input`); a plain one's reads
        self._plain = False  # a plain (not TLS) connection, non-blocking: its waits are `_poller`'s (`_read`)
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
        if body is None:
            data = request.wire(request.body)
        else:  # `wire`, without its frame: the thread POST's way
            data = b"%sContent-Length: %d\r\n\r\n%s" % (request.head, len(body), body)
        try:
            return self._attempt(request.target, data, limit, deadline)
        except _Stale as stale:
            if request.method not in IDEMPOTENT_METHODS or self._aborted:
                raise NoAnswer(stale.error) from stale.error
            return self._attempt(request.target, data, limit, deadline)

    def _attempt(self, target: tuple[str, str, int], data: bytes, limit: int, deadline: float) -> Answer:
        reused = False
        try:
            sock, reader = self._sock, self._reader
            if (  # the kept-alive connection, when it is clean
                sock is not None
                and reader is not None
                and self._target == target
                and time.monotonic() - self._idle_since <= IDLE_REUSE_S
                and not _has_input(sock, self._poller)
            ):
                reused = True
            else:
                sock, reader = self._connect(target, deadline)
            if self._aborted:  # while connecting
                raise ConnectionAbortedError("cut short by a shutdown")
            if self._plain:
                try:
                    sent = sock.send(data)  # the whole request, when the socket's buffer takes it (almost always)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    _write_rest(sock, memoryview(data)[sent:], deadline)
            else:
                sock.settimeout(_left(deadline))
                sock.sendall(data)  # the whole request in one write: one segment, one wake-up of the server
        except (OSError, ValueError, *_UNREADABLE) as error:  # _UNREADABLE: a proxy's answer to CONNECT
            self.close()
            raise NotSent(error) from error
        reader.expect(limit)
        try:
            self._read(sock, reader, deadline, self._poller if self._plain else None)
        except (OSError, *_UNREADABLE) as e:
            self.close()
            if reused and isinstance(e, ConnectionError):  # closed while idle (a reset too, when it crossed the write)
                raise _Stale(e) from e
            raise NoAnswer(e) from e
        parts = reader.parts  # emptied for the next answer: the body is a copy of its pieces
        answer = Answer(reader.status, reader.headers, parts[0] if len(parts) == 1 else b"".join(parts))
        if reader.keep_alive and not reader.stray:
            self._idle_since = time.monotonic()
        else:
            self.close()
        return answer

    def _read(self, sock: socket.socket, reader: _Reader, deadline: float, poller: Any = None) -> None:
        """Feed what `sock` gives to `reader` until its answer (its head, for `head_only`) is complete.

        `poller`: for a plain connection left non-blocking, its `select.poll`, which waits for each read up to
        the deadline (one system call less than the socket's own timeout, and no `settimeout` per read); None:
        the socket's timeout is set to what is left before each read.
        """
        parser = reader.parser
        assert parser is not None
        received = False
        while not reader.done:
            if poller is None:
                sock.settimeout(_left(deadline))
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the attempt's deadline passed")  # as `_left`
                if not poller.poll(math.ceil(left * 1000)):  # milliseconds, rounded up as a socket's timeout does
                    raise TimeoutError("timed out")  # what a socket's own timeout raises
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:  # woken with nothing to read after all: wait again
                continue
            if not data:
                if reader.ends_at_close() and not self._aborted:
                    reader.done = True  # its body ended with the connection, as its head said it would
                    break
                if not received:
                    raise RemoteDisconnected("the connection closed before any answer")
                raise IncompleteAnswer("the connection closed in the middle of the answer")
            received = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as error:
                if isinstance(error.__context__, AnswerTooLarge):  # raised by `_Reader` at the end of the head
                    raise error.__context__ from None
                if not reader.done:
                    raise
                reader.stray = True  # bytes after the answer, which is whole: the connection is not reused
            if reader.parts and not reader.bounded and reader.count() > reader.limit:
                raise AnswerTooLarge(f"the answer is more than {reader.limit} bytes")

    def _connect(self, target: tuple[str, str, int], deadline: float) -> tuple[socket.socket, _Reader]:
        """A new connection (the kept-alive one closed), and its reader."""
        self.close()
        scheme, host, port = target
        proxy = None if urllib.request.proxy_bypass(host) else self.proxies.get(scheme)
        address = (host, port)
        if proxy:
            proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            address = (proxy_parts.hostname or "", proxy_parts.port or 80)
        with FORK_GUARD:  # name resolution and a TLS handshake must not be cut in two by a fork
            sock = socket.create_connection(address, timeout=_left(deadline))
            self._sock, self._target = sock, target  # from here `close` and `abort` reach it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: send it now
            if proxy:
                self._tunnel(sock, target, deadline)
            if scheme == "https":
                sock.settimeout(_left(deadline))
                sock = self._sock = self._tls().wrap_socket(sock, server_hostname=host)
        reader = self._reader = _Reader()
        if hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            if not isinstance(sock, ssl.SSLSocket):
                sock.setblocking(False)
                self._plain = True
        return sock, reader

    def _tunnel(self, sock: socket.socket, target: tuple[str, str, int], deadline: float) -> None:
        """Ask the proxy on `sock` for a tunnel to `target` (`CONNECT`); raises `OSError` when it refuses."""
        authority = f"{_host(target[1])}:{target[2]}"
        sock.settimeout(_left(deadline))
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
        reader = _Reader(head_only=True)
        try:
            self._read(sock, reader, deadline)
        finally:
            reader.release()
        if not 200 <= reader.status < 300:
            raise OSError(f"Tunnel connection failed: {reader.status}")
        if reader.stray or reader.parts:
            raise OSError("the proxy sent more than its answer to CONNECT")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        reader, self._reader, self._poller, self._plain = self._reader, None, None, False
        if reader is not None:
            reader.release()
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()

    def abort(self) -> None:
        """From another thread: end a request in flight now (`shutdown` wakes a blocked `recv`, `close` does not),
        and do not write it again."""
        self._aborted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context()
        return self._ssl


class _Reader:
    """What llhttp tells of a connection's answers (`httptools.HttpResponseParser`'s callbacks), one at a time.

    One parser reads all the answers of a kept-alive connection; `expect` readies it for the next answer, and
    any error ends the connection with it. `head_only`: done at the end of the head (a proxy's answer to
    `CONNECT`, whose tunnel follows it).
    """

    __slots__ = (
        "bounded",
        "counted",
        "done",
        "head_only",
        "headers",
        "headers_done",
        "keep_alive",
        "limit",
        "on_body",
        "parser",
        "parts",
        "size",
        "status",
        "stray",
    )

    def __init__(self, *, head_only: bool = False) -> None:
        self.head_only = head_only
        self.parts: list[bytes] = []  # the body as llhttp gives it, one list for all the connection's answers
        # llhttp hands each piece of a body straight to the list (no Python frame per piece); `count` adds them up.
        self.on_body = self.parts.append
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.expect(0)

    def expect(self, limit: int) -> None:
        """Ready for the next answer, of at most `limit` bytes."""
        self.limit = limit
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts.clear()
        self.size = 0  # bytes of the body so far (as of `count`)
        self.counted = 0  # pieces of `parts` in `size`
        self.bounded = False  # its head declared a length within the limit (llhttp reads no more): no count needed
        self.headers_done = False
        self.done = False  # the answer is whole
        self.keep_alive = False  # its connection may carry the next request (llhttp's reading of the head)
        self.stray = False  # bytes came after it

    def release(self) -> None:
        """The parser and its protocol refer to each other: undone when the connection ends."""
        self.parser = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()  # type: ignore[union-attr]
        self.headers_done = True
        if self.head_only:
            self.done = True
            return
        length = self.headers.get("content-length", "")  # llhttp has checked it: digits, one value
        if length.isdigit() and int(length) > self.limit:
            raise AnswerTooLarge(f"the answer is {length} bytes, more than {self.limit}")
        self.bounded = length.isdigit() and "transfer-encoding" not in self.headers  # this head's, not an interim's

    def count(self) -> int:
        """`size`, with the pieces of the body that came since it was last counted."""
        parts = self.parts
        if len(parts) > self.counted:
            self.size += sum(map(len, parts[self.counted :]))
            self.counted = len(parts)
        return self.size

    def on_message_complete(self) -> None:
        if self.done:
            return
        if self.status < 200:  # an interim answer (100 Continue, 103 Early Hints): the final one follows
            self.headers, self.headers_done = {}, False
            return
        self.keep_alive = self.parser.should_keep_alive()  # type: ignore[union-attr]
        self.done = True

    def on_message_begin(self) -> None:
        if self.done:  # another answer behind this one, in the same read: nobody asked for it
            self.stray = True
            raise _Stray

    def ends_at_close(self) -> bool:
        """Whether the body is delimited by the server's close (neither a length nor chunks: RFC 9112 §6.3)."""
        return (
            self.headers_done
            and not self.done
            and "content-length" not in self.headers
            and "transfer-encoding" not in self.headers
        )


class _Stray(Exception):
    """Stops llhttp at an answer nobody asked for."""


# What reading an answer raises, besides `OSError` (timeouts, resets, the server's close before any answer).
_UNREADABLE = (AnswerTooLarge, IncompleteAnswer, httptools.HttpParserError, httptools.HttpParserUpgrade)


class _Stale(Exception):
    """A reused connection that failed as one the server closed while idle does (no answer, or a reset)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _left(deadline: float) -> float:
    """Seconds left before `deadline`; a `TimeoutError` when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return left


def _write_rest(sock: socket.socket, rest: memoryview, deadline: float) -> None:
    """Write what a non-blocking plain socket did not take at once, through its own timeout, up to the deadline."""
    try:
        sock.settimeout(_left(deadline))
        sock.sendall(rest)
    finally:
        sock.setblocking(False)


def _has_input(sock: socket.socket, poller: Any) -> bool:
    """Whether an idle connection has anything to read (bytes nobody asked for, or the server's close).

    `poller`: a `select.poll` with the socket registered (None where there is no `poll`)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        if poller is not None:
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


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
