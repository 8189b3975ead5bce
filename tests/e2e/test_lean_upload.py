"""Uploads speak the HTTP `context-python` speaks, one request at a time, and every answer is classified by
what it proves (delivered, worth another try, refused, or maybe stored: Context appends).

A scripted HTTP server on a real socket records the raw requests and answers what each test asks, including
what a broken server or proxy does: answers nobody asked for, endless or trickling bodies, closes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from getcontext import ContextAPI
from getcontext.token import Credential

from otel_context.config import resolve_settings
from otel_context.delivery import sender as sender_module
from otel_context.delivery import transport
from otel_context.delivery.item import ItemKind, QueueItem, rating_item
from otel_context.delivery.outcome import SendOutcome, Verdict
from otel_context.delivery.sender import ContextSender

from ..support.threads import TOKEN as API_TOKEN

TOKEN = "lean-secret-token"
BODY = '{"conversation":{"id":"t-1","messages":[{"role":"user","text":"héllo"}]}}'.encode()

# A script entry: the raw answer to send, None to close without answering, or a callable given the connection
# that answers as it likes (it returns True when the connection is to be closed).
Action = bytes | None | Callable[[socket.socket], bool | None]


class ScriptedServer:
    """Answers each request with the next scripted action (by default a 201), one request after another."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.script: list[Action] = []
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.connections = 0
        self.ahead = 0  # requests that had arrived before the answer to the one before them was sent
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            try:
                while True:
                    if b"\r\n\r\n" in buffer:
                        self.ahead += 1
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    line, *lines = head.split(b"\r\n")
                    headers = {k.decode().lower(): v.decode().strip() for k, _, v in (x.partition(b":") for x in lines)}
                    length = int(headers.get("content-length", "0"))
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    body, buffer = buffer[:length], buffer[length:]
                    self.requests.append((line, headers, body))
                    action = self.script.pop(0) if self.script else answer(201, b'{"status":"success"}')
                    if action is None:
                        return
                    if callable(action):
                        if action(conn):
                            return
                        continue
                    conn.sendall(action)
                    if b"\r\nConnection: close\r\n" in action.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                        return  # as a server does after saying so
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def answer(status: int, body: bytes = b"", *, headers: str = "", chunked: bool = False) -> bytes:
    head = f"HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\n{headers}"
    if chunked:
        framed = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:5], body[5:]) if part)
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def make_sender(url: str, timeout: float = 5.0) -> ContextSender:
    return ContextSender(resolve_settings(endpoint=url, token=TOKEN, tenant_id="tenant-7", timeout=timeout))


@pytest.fixture
def sender(server: ScriptedServer) -> Iterator[ContextSender]:
    made = make_sender(server.url)
    yield made
    made.close()


def thread(n: int) -> QueueItem:
    message = {"role": "user", "message": f"question {n}"}
    return QueueItem(f"t-{n}", json.dumps({"conversation": {"id": f"t-{n}", "messages": [message]}}).encode())


def outcome_of(outcome: SendOutcome) -> tuple[Verdict, int | None]:
    return outcome.verdict, outcome.status


# --- what goes on the wire ---------------------------------------------------------------------------------


def test_each_request_is_the_one_the_client_itself_sends(server, sender):
    # The reference: context-python with its default transport (requests), sending on its own.
    client = ContextAPI(credential=Credential(TOKEN), endpoint=server.url, retry_total=0)
    options = {"enforce_https": False, "content_type": "application/json"}
    client.log.conversation_thread(BODY, tenant_id="tenant-7", **options)
    server.script.append(answer(200))
    client.log.update_conversation_thread("t 1", b'[{"rating":1}]', **options)
    server.script.append(answer(200, b'{"id":"t 1","messages":[]}'))
    client.conversation("t 1", params={"tenant_id": "tenant-7"}, enforce_https=False)
    client.close()
    assert sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    server.script.append(answer(200))
    assert sender.send(QueueItem("t 1", b'[{"rating":1}]', ItemKind.RATING)).verdict is Verdict.DELIVERED
    server.script.append(answer(200, b'{"id":"t 1","messages":[]}'))
    assert sender.stored_messages("t 1") == []
    reference, ours = server.requests[:3], server.requests[3:]
    assert (
        [line for line, _, _ in ours]
        == [line for line, _, _ in reference]
        == [
            b"POST /api/v1/log/conversation/thread?tenant_id=tenant-7 HTTP/1.1",
            b"PATCH /api/v1/log/conversation/thread/t%201 HTTP/1.1",
            b"GET /api/v1/conversations/t%201?tenant_id=tenant-7 HTTP/1.1",
        ]
    )
    for (_, mine, body), (_, theirs, their_body) in zip(ours, reference, strict=True):
        assert body == their_body
        assert mine["authorization"] == theirs["authorization"] == f"Bearer {TOKEN}"
        assert mine.get("content-type") == theirs.get("content-type")
        if theirs["accept"] != "*/*":  # requests' default where the client sets none
            assert mine["accept"] == theirs["accept"]
        assert mine["user-agent"].startswith("otel-context ")
        assert mine.get("content-length") == theirs.get("content-length")
        assert mine["host"] == theirs["host"]
        assert mine["accept-encoding"] == "identity"  # answers are read as they come, never decompressed
    assert server.connections == 2  # the reference client's, and ours for all three


def test_a_header_that_would_break_the_request_is_never_written(server):
    # The head is written as the client built it: a line break in a header (here, the token) would write a
    # header of its own, or end the head early. Checked once per built request, before anything is written.
    sender = ContextSender(resolve_settings(endpoint=server.url, token="tok\r\nX-Injected: 1", timeout=5.0))
    for outcome in (sender.send(thread(0)), sender.send(rating_item("t-0", 0, 1)), sender.stored_messages("t-0")):
        assert outcome_of(outcome) == (Verdict.RETRY, None) and "not sent" in outcome.reason, outcome
        assert "X-Injected" not in outcome.reason
    assert server.requests == [] and server.connections == 0
    sender.close()


def test_a_batch_goes_one_request_at_a_time_on_one_kept_alive_connection(server, sender):
    items = [thread(n) for n in range(10)]
    assert [o.verdict for o in sender.send_batch(items)] == [Verdict.DELIVERED] * 10
    assert [body for _, _, body in server.requests] == [item.body for item in items]
    assert server.connections == 1
    assert server.ahead == 0, "a request was written before the answer to the one before it"


# --- connections: when one is reused, and when a request is written again ----------------------------------


def answer_then_close(conn: socket.socket) -> bool:
    conn.sendall(answer(201, b"{}"))  # kept alive as far as the client can tell, then closed while idle
    time.sleep(0.05)
    return True


def test_a_connection_the_server_closed_while_idle_is_not_written_to(server, sender):
    server.script.append(answer_then_close)
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    time.sleep(0.2)
    assert sender.send(thread(1)).verdict is Verdict.DELIVERED
    assert server.connections == 2 and len(server.requests) == 2  # seen closed before the write: no loss


def test_a_post_is_never_written_twice_when_its_connection_closes_under_it(server, sender):
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    server.script.append(None)  # the server read the request and closed without a word: it may have stored it
    outcome = sender.send(thread(1))
    assert outcome_of(outcome) == (Verdict.UNKNOWN, None), outcome
    assert len(server.requests) == 2 and server.connections == 1, "the POST was written again"
    assert sender.send(thread(2)).verdict is Verdict.DELIVERED  # on a fresh connection
    assert server.connections == 2


def test_a_rating_patch_is_written_again_once_when_a_reused_connection_was_closed(server, sender):
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    server.script.append(None)
    assert sender.send(rating_item("t-0", 0, 1)).verdict is Verdict.DELIVERED  # setting a rating twice is harmless
    assert [line.split()[0] for line, _, _ in server.requests] == [b"POST", b"PATCH", b"PATCH"]
    assert server.connections == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.0 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        answer(201, b"{}", headers="Connection: close\r\n"),
    ],
    ids=["http-1.0", "connection-close"],
)
def test_a_connection_the_answer_says_closes_is_not_reused(server, sender, raw):
    server.script.append(raw)
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    assert sender.send(thread(1)).verdict is Verdict.DELIVERED
    assert server.connections == 2 and len(server.requests) == 2


def test_a_connection_idle_too_long_is_closed_not_reused(server, sender, monkeypatch):
    monkeypatch.setattr(transport, "IDLE_REUSE_S", 0.2)
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    assert sender.send(thread(1)).verdict is Verdict.DELIVERED
    assert server.connections == 1
    time.sleep(0.3)  # the server may be closing it this instant: a POST must not race that
    assert sender.send(thread(2)).verdict is Verdict.DELIVERED
    assert server.connections == 2 and len(server.requests) == 3


def stray_later(conn: socket.socket) -> None:
    conn.sendall(answer(201, b"{}"))
    time.sleep(0.1)
    conn.sendall(answer(201, b'{"stray":true}'))  # an answer nobody asked for, on an idle connection


def stray_behind(conn: socket.socket) -> None:
    conn.sendall(answer(201, b"{}") + answer(201, b'{"stray":true}'))  # in the same write as the real answer


def uploads_around_a_stray_answer(server: ScriptedServer, sender: ContextSender, stray: Action) -> list[SendOutcome]:
    """An upload answered with `stray`'s extra answer, then one the server refuses (400)."""
    server.script += [stray, answer(400, b'{"error":"no messages"}')]
    first = sender.send(thread(0))
    time.sleep(0.3)
    return [first, sender.send(thread(1))]


STRAYS = [stray_later, stray_behind]
STRAY_IDS = ["while-idle", "behind-an-answer"]


@pytest.mark.parametrize("stray", STRAYS, ids=STRAY_IDS)
def test_an_answer_nobody_asked_for_is_never_taken_for_the_next_uploads(server, sender, stray):
    # Regression: the hand-written pipelining reader credited a stray answer on an idle connection to the
    # next upload, which the server then answered 400 (or never stored).
    first, outcome = uploads_around_a_stray_answer(server, sender, stray)
    assert first.verdict is Verdict.DELIVERED, first
    assert outcome_of(outcome) == (Verdict.REJECTED, 400), outcome
    assert "no messages" in outcome.reason
    assert len(server.requests) == 2
    assert sender.send(thread(2)).verdict is Verdict.DELIVERED


@pytest.mark.parametrize("stray", STRAYS, ids=STRAY_IDS)
def test_the_stray_answer_test_fails_for_a_client_without_the_stray_data_checks(server, sender, stray, monkeypatch):
    # The test above must catch the regression: with the checks off (input on an idle connection, read before
    # a reuse; bytes behind an answer, in the same read), a stray answer is taken for an upload's own.
    monkeypatch.setattr(transport, "_has_input", lambda sock, poller: False)
    monkeypatch.setattr(transport._Reader, "on_message_begin", lambda reader: None)
    first, outcome = uploads_around_a_stray_answer(server, sender, stray)
    assert [outcome_of(first), outcome_of(outcome)] != [(Verdict.DELIVERED, 201), (Verdict.REJECTED, 400)]


# --- bounded answers and the deadline ----------------------------------------------------------------------


def huge_length(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{")
    time.sleep(1)


def endless(framing: str) -> Callable[[socket.socket], bool]:
    def send(conn: socket.socket) -> bool:
        if framing == "chunked":
            conn.sendall(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            piece = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        else:  # no length: the body ends when the server closes
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
            piece = b"x" * 65536
        try:
            for _ in range(4096):  # 256 MiB, were the client to read it all
                conn.sendall(piece)
        except OSError:
            pass
        return True

    return send


@pytest.mark.parametrize(
    "action",
    [huge_length, endless("chunked"), endless("close-delimited")],
    ids=["content-length-1e12", "endless-chunks", "endless-until-close"],
)
def test_an_answer_too_large_is_an_unknown_outcome_and_its_connection_is_closed(server, sender, action):
    # Regression: `Content-Length: 10**12` raised MemoryError and left the socket mid-answer; chunked and
    # close-delimited bodies were read without bound.
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    server.script.append(action)
    started = time.monotonic()
    outcome = sender.send(thread(1))
    assert outcome_of(outcome) == (Verdict.UNKNOWN, None), outcome  # a 201 head: it may well be stored
    assert "too large" in outcome.reason and "1048576" in outcome.reason
    assert time.monotonic() - started < 3
    assert sender.send(thread(2)).verdict is Verdict.DELIVERED
    assert server.connections == 2, "the connection was reused after an answer left unread"


def trickle(head_only: bool) -> Callable[[socket.socket], bool]:
    def send(conn: socket.socket) -> bool:
        data = answer(201, b'{"status":"success","data":{"id":"t-1"}}')
        if head_only:
            data = data[: data.index(b"\r\n\r\n")] + b"\r\nX-Slow: " + b"y" * 1000
        else:
            conn.sendall(data[:-20])
            data = data[-20:]
        try:
            for byte in data:
                conn.sendall(bytes([byte]))
                time.sleep(0.1)  # each read waits far less than the timeout; all of them, far more
        except OSError:
            pass
        return True

    return send


@pytest.mark.parametrize("head_only", [True, False], ids=["head", "body"])
def test_an_answer_that_trickles_in_ends_at_the_attempts_deadline(server, head_only):
    sender = make_sender(server.url, timeout=1.0)
    server.script.append(trickle(head_only))
    started = time.monotonic()
    outcome = sender.send(thread(0))
    elapsed = time.monotonic() - started
    assert outcome_of(outcome) == (Verdict.UNKNOWN, None) and "TimeoutError" in outcome.reason, outcome
    assert 0.9 < elapsed < 1.6, elapsed
    sender.close()


class TunnelProxy:
    """An HTTP proxy that only tunnels (`CONNECT`), relaying bytes both ways; records what it was asked."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connects: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(65536)
            line = head.split(b"\r\n", 1)[0]
            self.connects.append(line)
            host, port = line.split()[1].decode().rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_a_proxy_from_the_environment_carries_every_request_through_its_tunnel(server, monkeypatch):
    proxy = TunnelProxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sender = make_sender(server.url)
    assert [o.verdict for o in sender.send_batch([thread(0), thread(1)])] == [Verdict.DELIVERED] * 2
    server.script.append(answer(200, b'{"messages":[]}'))
    assert sender.stored_messages("t-0") == []
    host_port = server.url.removeprefix("http://").encode()
    assert [line.split()[:2] for line in proxy.connects] == [[b"CONNECT", host_port]]  # one tunnel, kept alive
    assert [line.split()[0] for line, _, _ in server.requests] == [b"POST", b"POST", b"GET"]
    sender.close()
    proxy.sock.close()


# --- classification ----------------------------------------------------------------------------------------

POST_TABLE = [
    (answer(201, b'{"status":"success","data":{"id":"t-1"}}'), Verdict.DELIVERED, 201, None),
    (answer(201, b'{"id":"t-1"}', chunked=True), Verdict.DELIVERED, 201, None),
    (answer(201, b""), Verdict.DELIVERED, 201, None),
    (answer(201, b"{}"), Verdict.DELIVERED, 201, None),
    (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{}",
        Verdict.DELIVERED,
        201,
        None,
    ),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + answer(201, b"{}"), Verdict.DELIVERED, 201, None),  # an interim answer first
    (answer(201, b"not json"), Verdict.UNKNOWN, 201, None),
    (b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", Verdict.UNKNOWN, 201, None),
    (answer(201, b"[1, 2]"), Verdict.UNKNOWN, 201, None),
    (answer(200, b"{}"), Verdict.UNKNOWN, 200, None),
    (answer(204), Verdict.UNKNOWN, 204, None),
    (answer(301, headers="Location: http://elsewhere/\r\n"), Verdict.REJECTED, 301, None),
    (answer(400, b'{"error":"no messages"}'), Verdict.REJECTED, 400, None),
    (answer(401, b'{"error":"bad token"}'), Verdict.REJECTED, 401, None),
    (answer(403), Verdict.REJECTED, 403, None),
    (answer(404), Verdict.REJECTED, 404, None),
    (answer(409), Verdict.REJECTED, 409, None),
    (answer(413), Verdict.REJECTED, 413, None),
    (answer(422), Verdict.REJECTED, 422, None),
    (answer(408, headers="Connection: close\r\n"), Verdict.RETRY, 408, None),
    (answer(429, b"slow down", headers="Retry-After: 3\r\n"), Verdict.RETRY, 429, 3.0),
    (answer(503, headers="Retry-After: 7\r\n"), Verdict.RETRY, 503, 7.0),
    (answer(500), Verdict.UNKNOWN, 500, None),
    (answer(502), Verdict.UNKNOWN, 502, None),
    (answer(504), Verdict.UNKNOWN, 504, None),
    (answer(501), Verdict.UNKNOWN, 501, None),
    (b"HTTP/1.1 20", Verdict.UNKNOWN, None, None),  # cut inside the status line
    (b"HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\n{}", Verdict.UNKNOWN, None, None),  # cut inside the body
    (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}", Verdict.UNKNOWN, None, None),  # a cut chunk
    (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n", Verdict.UNKNOWN, None, None),  # a cut head
    (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        Verdict.UNKNOWN,
        None,
        None,
    ),
    (b"I am not HTTP\r\n\r\n", Verdict.UNKNOWN, None, None),
]


@pytest.mark.parametrize(
    ("raw", "verdict", "status", "retry_after"),
    POST_TABLE,
    ids=[
        "201",
        "201-chunked",
        "201-empty",
        "201-empty-object",
        "201-until-close",
        "100-then-201",
        "201-undecodable",
        "201-text",
        "201-list",
        "200",
        "204",
        "301",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "422",
        "408",
        "429-retry-after",
        "503-retry-after",
        "500",
        "502",
        "504",
        "501",
        "cut-status-line",
        "cut-body",
        "cut-chunk",
        "cut-head",
        "101",
        "not-http",
    ],
)
def test_a_post_answer_is_classified_by_what_it_proves(server, sender, raw, verdict, status, retry_after):
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED  # connected first: answers come on a reused one
    server.script.append(raw)
    outcome = sender.send(thread(1))
    assert (outcome.verdict, outcome.status, outcome.retry_after_s) == (verdict, status, retry_after), outcome
    assert len(server.requests) == 2, "a POST was written twice"
    if status in (400, 401):
        assert "no messages" in outcome.reason or "bad token" in outcome.reason


@pytest.mark.parametrize(
    ("raw", "verdict", "status"),
    [
        (answer(200), Verdict.DELIVERED, 200),
        (answer(204), Verdict.DELIVERED, 204),
        (answer(400, b'{"error":"no such message"}'), Verdict.REJECTED, 400),
        (answer(404), Verdict.RETRY, 404),  # its thread may not be stored yet
        (answer(500), Verdict.RETRY, 500),  # sent again, it sets the same rating
        (answer(502), Verdict.RETRY, 502),
        (answer(429, headers="Retry-After: 2\r\n"), Verdict.RETRY, 429),
        (b"HTTP/1.1 20", Verdict.RETRY, None),
    ],
    ids=["200", "204", "400", "404", "500", "502", "429", "cut"],
)
def test_a_rating_patch_is_never_unknown(server, sender, raw, verdict, status):
    server.script += [raw]
    outcome = sender.send(rating_item("t-0", 2, 1))
    assert outcome_of(outcome) == (verdict, status), outcome
    (line, _, body), *_ = server.requests
    assert line == b"PATCH /api/v1/log/conversation/thread/t-0 HTTP/1.1" and json.loads(body) == [{}, {}, {"rating": 1}]


def test_nothing_sent_is_worth_another_try():
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # connection refused
    sender = make_sender(url)
    for outcome in (*sender.send_batch([thread(0), rating_item("t-0", 0, 1)]), sender.stored_messages("t-0")):
        assert outcome_of(outcome) == (Verdict.RETRY, None) and "not sent" in outcome.reason, outcome
        assert "ConnectionRefusedError" in outcome.reason
    sender.close()


def test_a_failed_tls_handshake_is_worth_another_try():
    plain = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = plain.accept()
        with conn:
            conn.recv(65536)  # the ClientHello
            conn.sendall(answer(400))  # a plain-HTTP server's answer to it

    threading.Thread(target=serve, daemon=True).start()
    sender = make_sender(f"https://127.0.0.1:{plain.getsockname()[1]}")
    outcome = sender.send(thread(0))
    assert outcome_of(outcome) == (Verdict.RETRY, None) and "SSL" in outcome.reason, outcome
    sender.close()
    plain.close()


def echo_request(conn: socket.socket) -> None:
    conn.sendall(answer(400, f"bad request: Authorization: Bearer {TOKEN}".encode()))


def test_the_token_never_reaches_an_outcome_even_when_an_answer_echoes_it(server, sender):
    server.script += [echo_request, echo_request]
    for outcome in (sender.send(thread(0)), sender.stored_messages("t-0")):
        assert outcome.status == 400 and "bad request" in outcome.reason
        assert TOKEN not in outcome.reason and "***" in outcome.reason


def test_abort_cuts_an_upload_in_flight_and_the_rest_of_its_batch_short(server, sender):
    assert sender.send(thread(0)).verdict is Verdict.DELIVERED
    server.script.append(lambda conn: time.sleep(5))  # read, then no answer: the upload waits on the socket
    threading.Timer(0.3, sender.abort).start()
    started = time.monotonic()
    outcomes = sender.send_batch([thread(1), thread(2), thread(3)])
    assert time.monotonic() - started < 2
    assert outcome_of(outcomes[0]) == (Verdict.UNKNOWN, None)  # written: it may have been stored
    assert [outcome_of(o) for o in outcomes[1:]] == [(Verdict.RETRY, None)] * 2  # never written
    assert len(server.requests) == 2 and server.connections == 1


# --- reading a thread back ---------------------------------------------------------------------------------


def test_a_thread_is_read_back_as_stored(local_api):
    sender = ContextSender(resolve_settings(endpoint=local_api.url, token=API_TOKEN))
    messages = [
        {"role": "user", "message": "hi", "type": "message", "event_timestamp": "2026-01-01T00:00:00.000Z"},
        {
            "role": "assistant",
            "message": "yo",
            "type": "message",
            "event_timestamp": "2026-01-01T00:00:01.000Z",
            "metadata": {"segment": "trace-1/span-1", "tokens": "12"},
        },
    ]
    body = {"conversation": {"id": "read-me", "messages": messages, "metadata": {"service": "demo"}}}
    assert sender.send(QueueItem("read-me", json.dumps(body).encode())).verdict is Verdict.DELIVERED
    stored = sender.stored_messages("read-me")
    assert isinstance(stored, list), stored
    fields = ("role", "message", "type", "metadata")
    assert [{name: m[name] for name in fields} for m in stored] == [
        {"role": "user", "message": "hi", "type": "message", "metadata": {}},
        {
            "role": "assistant",
            "message": "yo",
            "type": "message",
            "metadata": {"segment": "trace-1/span-1", "tokens": "12"},
        },
    ]
    assert [m["event_timestamp"][:19] for m in stored] == ["2026-01-01T00:00:00", "2026-01-01T00:00:01"]
    assert sender.stored_messages("never-sent") is None  # 404: nothing of it is stored
    local_api.set_faults(reset_s=30)  # every connection dropped
    failing = sender.stored_messages("read-me")
    assert isinstance(failing, SendOutcome) and outcome_of(failing) == (Verdict.RETRY, None), failing
    local_api.clear_faults()
    sender.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (answer(401, b'{"error":"bad token"}'), 401),
        (answer(500), 500),
        (answer(200, b"not json"), 200),
        (answer(200, b'{"id":"t-0"}'), 200),
        (answer(200, b'{"messages":[1]}'), 200),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n", None),
        (b"HTTP/1.1 20", None),
    ],
    ids=["401", "500", "not-json", "no-messages", "not-messages", "too-large", "cut"],
)
def test_a_thread_that_cannot_be_read_back_is_worth_another_try(server, sender, raw, status):
    server.script.append(raw)
    outcome = sender.stored_messages("t-0")
    assert isinstance(outcome, SendOutcome) and outcome_of(outcome) == (Verdict.RETRY, status), outcome


def test_a_read_back_is_bounded_whatever_its_framing(server, sender, monkeypatch):
    monkeypatch.setattr(sender_module, "READ_BACK_LIMIT", 1 << 20)
    messages = [{"role": "user", "message": "x" * 1000}] * 500  # 0.5 MB: within the bound
    server.script.append(answer(200, json.dumps({"messages": messages}).encode(), chunked=True))
    assert len(sender.stored_messages("t-0")) == 500
    server.script.append(endless("chunked"))
    outcome = sender.stored_messages("t-0")
    assert outcome_of(outcome) == (Verdict.RETRY, None) and "too large" in outcome.reason, outcome
