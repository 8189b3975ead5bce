"""The upload's short ways: each must come to what the long way does.

- `answers.classify` reads a 201's JSON object with the decoder's scanner, and falls back to `json.loads`;
- `UploadTransport` keeps a plain connection non-blocking (a `send`, then `poll` and `recv`), and writes what
  the socket did not take at once through the socket's own timeout;
- llhttp hands a body's pieces straight to a list (`_Reader.count` adds them up against the limit);
- `DeliveryQueue` settles a try whose items were all delivered under one lock.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from otel_context.config import resolve_settings
from otel_context.counters import Counters
from otel_context.delivery import transport
from otel_context.delivery.answers import POSTED, classify
from otel_context.delivery.item import QueueItem
from otel_context.delivery.outcome import SendOutcome, Verdict
from otel_context.delivery.transport import Answer, NoAnswer, PreparedRequest, UploadTransport
from otel_context.delivery.workers import DeliveryQueue

JSON = {"content-type": "application/json; charset=utf-8"}


def long_way(body: bytes, headers: dict[str, str]) -> SendOutcome:
    """What `classify` answered for a POST's 201 before its short way (`json.loads` of every body)."""
    if not body:
        return SendOutcome(Verdict.DELIVERED, 201)
    if "json" not in (headers.get("content-type") or ""):
        why = "not JSON"
    else:
        try:
            why = "" if isinstance(json.loads(body), dict) else "not a JSON object"
        except ValueError:
            why = "undecodable JSON"
    if not why:
        return SendOutcome(Verdict.DELIVERED, 201)
    return SendOutcome(Verdict.UNKNOWN, 201, reason=f"an unreadable 201: {why}")


BODIES = [
    b"",
    b"{}",
    b'{"status": "success", "data": {"id": "t-1"}}',
    b'{"a":1} ',
    b' {"a":1}',
    b'{"a":1}\n',
    b'{"a":1}{',
    b'{"a":1}}',
    b'{"a":1,}',
    b'{"a":NaN}',
    b'{"a":"\\ud800"}',
    '{"a":"héllo"}'.encode(),
    b'\xef\xbb\xbf{"a":1}',
    b"{",
    b"}",
    b"[1]",
    b'"{}"',
    b"{\x00}",
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("headers", [JSON, {"content-type": "text/plain"}, {}])
def test_a_201_is_classified_as_the_long_way_does(body, headers):
    assert classify("POST", Answer(201, headers, body)) == long_way(body, headers)


def test_a_delivered_post_is_one_shared_outcome():
    outcome = classify("POST", Answer(201, JSON, b'{"id":"t-1"}'))
    assert outcome is POSTED and outcome == SendOutcome(Verdict.DELIVERED, 201)
    assert classify("PATCH", Answer(201, JSON, b"[1]")) == SendOutcome(Verdict.DELIVERED, 201)


class SlowReader:
    """A server that reads nothing for `pause` seconds, then each request whole, and answers 201 (chunked when
    `chunks` is given, in that many pieces)."""

    def __init__(self, pause: float = 0.0, chunks: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.pause = pause
        self.chunks = chunks
        self.bodies: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            time.sleep(self.pause)
            buffer = b""
            while True:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                if not _:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                    continue
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                got = bytearray(rest)
                while len(got) < length:
                    data = conn.recv(1 << 20)
                    if not data:  # the client gave up on its request
                        return
                    got += data
                self.bodies.append(bytes(got[:length]))
                buffer = bytes(got[length:])
                conn.sendall(self._answer())

    def _answer(self) -> bytes:
        body = b'{"id":"t-1"}'
        if not self.chunks:
            return b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
        pieces = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
        return b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + (
            pieces + b"0\r\n\r\n"
        )


def request(url: str) -> PreparedRequest:
    host, port = url.removeprefix("http://").split(":")
    head = b"POST /api/v1/log/conversation/thread HTTP/1.1\r\nHost: %s\r\n" % url.removeprefix("http://").encode()
    return PreparedRequest("POST", ("http", host, int(port)), "/api/v1/log/conversation/thread", head)


def test_a_request_the_socket_does_not_take_at_once_is_written_whole(monkeypatch):
    rests = []
    write_rest = transport._write_rest
    monkeypatch.setattr(transport, "_write_rest", lambda *args: (rests.append(len(args[1])), write_rest(*args)))
    server = SlowReader(pause=0.3)
    body = b"x" * (16 << 20)  # far more than a loopback socket's buffers take while nobody reads
    upload = UploadTransport(timeout_s=30)
    try:
        answer = upload.exchange(request(server.url), body)
        assert answer.status == 201 and server.bodies == [body]
        assert len(rests) == 1 and 0 < rests[0] < len(body)  # the rest went through the socket's own timeout
        assert upload.exchange(request(server.url), b"second").status == 201  # the same connection, still clean
        assert server.bodies[1] == b"second"
    finally:
        upload.close()


def test_a_request_the_server_never_reads_ends_at_the_deadline_not_sent():
    server = SlowReader(pause=5)
    upload = UploadTransport(timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(transport.NotSent):
            upload.exchange(request(server.url), b"x" * (64 << 20))
    finally:
        upload.close()
    assert time.monotonic() - started < 3


def test_a_body_in_many_pieces_is_put_together_and_counted_against_the_limit():
    server = SlowReader(chunks=1)
    upload = UploadTransport(timeout_s=5)
    try:
        assert upload.exchange(request(server.url), b"{}").body == b'{"id":"t-1"}'
        with pytest.raises(NoAnswer) as raised:
            upload.exchange(request(server.url), b"{}", limit=5)
        assert isinstance(raised.value.__cause__, transport.AnswerTooLarge)
    finally:
        upload.close()


class Delivered:
    """A sender under `DeliveryQueue` that delivers everything, and records each try."""

    def __init__(self) -> None:
        self.tries: list[list[str]] = []

    def send_batch(self, items: list[QueueItem]) -> list[SendOutcome]:
        self.tries.append([item.thread_id for item in items])
        time.sleep(0.01)
        return [POSTED for _ in items]

    def stored_messages(self, thread_id: str) -> None:
        return None

    def abort(self) -> None:
        pass


def test_a_try_all_delivered_is_settled_at_once_and_lets_the_next_upload_of_a_thread_go():
    settings = resolve_settings(endpoint="http://127.0.0.1:9", token="t", concurrency=1, batch_size=8)
    sender, counters, settled = Delivered(), Counters(), []
    delivery = DeliveryQueue(sender, settings, counters, on_settled=lambda item: settled.append(item.thread_id))
    items = [QueueItem(f"t-{n % 3}", b"{}") for n in range(9)]  # three uploads per thread, one at a time each
    try:
        assert delivery.offer(items, admitted=True) == 9
        assert delivery.flush(10)
        assert counters.get("threads_uploaded") == 9 and delivery.pending() == 0
        assert sorted(settled) == sorted(item.thread_id for item in items)
        assert all(len(set(batch)) == len(batch) for batch in sender.tries)  # never two of a thread at once
    finally:
        delivery.shutdown(1)


def answering(raw: bytes) -> str:
    """A server that reads one request's head and answers `raw`, then closes; its URL."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            conn.sendall(raw)
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_length_an_interim_answer_declared_does_not_bound_the_final_one():
    chunked = b"".join(b"4\r\nxxxx\r\n" for _ in range(10)) + b"0\r\n\r\n"
    url = answering(
        b"HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    upload = UploadTransport(timeout_s=5)
    try:
        with pytest.raises(NoAnswer) as raised:
            upload.exchange(request(url), b"{}", limit=20)
        assert isinstance(raised.value.__cause__, transport.AnswerTooLarge)
    finally:
        upload.close()
