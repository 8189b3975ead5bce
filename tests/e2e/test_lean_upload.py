"""The lean upload path speaks exactly the HTTP `context-python` speaks, and is classified the same way.

A scripted HTTP server records the raw requests and answers what each test asks; the same thread is
sent once through the client itself (`send` of a rating-free item with the lean path switched off) and
once through `PreparedPost`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from otel_context.config import resolve_settings
from otel_context.delivery.item import QueueItem
from otel_context.delivery.outcome import Verdict
from otel_context.delivery.sender import ContextSender

from ..support.paths import REPO
from ..support.threads import TOKEN as API_TOKEN
from ..support.threads import dialogue, read_threads, turns

TOKEN = "lean-secret-token"
BODY = '{"conversation":{"id":"t-1","messages":[{"role":"user","text":"héllo"}]}}'.encode()


class ScriptedServer:
    """Answers each request with the next scripted raw response (bytes, or None to close at once).

    Reads requests one after another off the connection, as an HTTP/1.1 server does, so pipelined requests
    are answered in order; closes after an answer that says `Connection: close`.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.script: list[bytes | None] = []
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
                answer = self.script.pop(0) if self.script else _answer(201, b'{"id":"t-1"}')
                if answer is None:
                    return
                conn.sendall(answer)
                if b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    return  # as a server does after saying so

    def close(self) -> None:
        self.sock.close()


def _answer(status: int, body: bytes = b"", *, headers: str = "", chunked: bool = False) -> bytes:
    reason = {201: "Created", 401: "Unauthorized", 429: "Too Many Requests", 400: "Bad Request"}.get(status, "X")
    if chunked:
        framed = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:5], body[5:]) if part)
        return (
            (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{headers}"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + framed
            + b"0\r\n\r\n"
        )
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def _sender(server: ScriptedServer, *, lean: bool = True) -> ContextSender:
    sender = ContextSender(resolve_settings(endpoint=server.url, token=TOKEN, tenant_id="tenant-7", timeout=5.0))
    if not lean:
        sender._local.prepared = None  # the client does the sending
    return sender


def test_the_lean_request_is_the_one_the_client_sends(server):
    client_sender, lean_sender = _sender(server, lean=False), _sender(server)
    assert client_sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    assert lean_sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    (line_c, headers_c, body_c), (line_l, headers_l, body_l) = server.requests
    assert line_l == line_c == b"POST /api/v1/log/conversation/thread?tenant_id=tenant-7 HTTP/1.1"
    assert headers_l == headers_c
    assert headers_l["authorization"] == f"Bearer {TOKEN}"
    assert headers_l["content-type"] == "application/json" and headers_l["user-agent"].startswith("otel-context ")
    assert body_l == body_c == BODY
    client_sender.close()
    lean_sender.close()


def test_one_connection_is_kept_alive_and_an_idle_close_is_retried_once(server):
    sender = _sender(server)
    for _ in range(5):
        assert sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    assert server.connections == 1
    server.script.append(None)  # the server dropped the kept-alive connection: one fresh try, no error
    assert sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    assert server.connections == 2 and len(server.requests) == 7
    sender.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "client"])
@pytest.mark.parametrize(
    ("answer", "verdict", "status", "retry_after"),
    [
        (_answer(201, b'{"id":"t-1"}', chunked=True), Verdict.DELIVERED, 201, None),
        (_answer(201, b""), Verdict.DELIVERED, 201, None),
        (_answer(401, b'{"error":"bad token"}'), Verdict.REJECTED, 401, None),
        (_answer(429, b"slow down", headers="Retry-After: 3\r\n"), Verdict.RETRY, 429, 3.0),
        (_answer(400, b'{"error":"no messages"}'), Verdict.REJECTED, 400, None),
        (_answer(200, b"{}"), Verdict.REJECTED, 200, None),
        (_answer(201, b"not json"), Verdict.REJECTED, 201, None),  # the client's DecodeError
        (
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
            Verdict.RETRY,
            None,
            None,
        ),
        (_answer(201, b"[1, 2]"), Verdict.RETRY, None, None),
        (_answer(201, b"{}"), Verdict.DELIVERED, 201, None),
    ],
    ids=[
        "201-chunked",
        "201-empty",
        "401",
        "429-retry-after",
        "400",
        "200-not-201",
        "201-undecodable",
        "201-text",
        "201-list",
        "201-empty-object",
    ],
)
def test_answers_are_classified_as_the_client_classifies_them(server, lean, answer, verdict, status, retry_after):
    sender = _sender(server, lean=lean)
    assert sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED  # connect first
    server.script.append(answer)
    outcome = sender.send(QueueItem("t-1", BODY))
    assert (outcome.verdict, outcome.status, outcome.retry_after_s) == (verdict, status, retry_after)
    assert TOKEN not in (outcome.reason or "")
    if status in (401, 400):
        assert "bad token" in outcome.reason or "no messages" in outcome.reason
    sender.close()


def test_a_reset_is_retried_by_the_queue_not_resent_on_the_spot(server):
    sender = _sender(server)
    assert sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    server.script.append(b"HTTP/1.1 20")  # cut inside the status line
    outcome = sender.send(QueueItem("t-1", BODY))
    assert outcome.verdict is Verdict.RETRY and outcome.status is None
    assert len(server.requests) == 2
    sender.close()


def test_abort_cuts_an_upload_in_flight_short_without_a_second_try(server):
    sender = _sender(server)
    assert sender.send(QueueItem("t-1", BODY)).verdict is Verdict.DELIVERED
    hang = threading.Event()
    server.script.append(b"")  # answer nothing: the upload waits on the socket
    threading.Timer(0.3, lambda: (hang.set(), sender.abort())).start()  # set first: abort wakes the sender
    outcome = sender.send(QueueItem("t-1", BODY))
    assert hang.is_set() and outcome.verdict is Verdict.RETRY
    assert server.connections == 1, "an aborted upload was sent again on a fresh connection"
    sender.close()


def _thread(n: int, size: int = 0) -> QueueItem:
    message = {"role": "user", "text": f"question {n} " + "x" * size}
    return QueueItem(f"t-{n}", json.dumps({"conversation": {"id": f"t-{n}", "messages": [message]}}).encode())


def test_a_batch_goes_out_pipelined_on_one_connection_each_request_as_the_client_sends_it(server):
    client_sender, lean_sender = _sender(server, lean=False), _sender(server)
    assert client_sender.send(_thread(0)).verdict is Verdict.DELIVERED
    items = [_thread(n) for n in range(1, 11)]
    outcomes = lean_sender.send_batch(items)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.DELIVERED] * 10
    assert server.connections == 2  # the client's and the lean path's
    assert server.ahead >= 5, "the requests were not written before their answers were read"
    (line_c, headers_c, _), *pipelined = server.requests
    assert [body for _, _, body in pipelined] == [item.body for item in items]  # in order, each once
    for (line, headers, _), item in zip(pipelined, items, strict=True):
        assert line == line_c and headers == {**headers_c, "content-length": str(len(item.body))}
    client_sender.close()
    lean_sender.close()


def test_each_pipelined_answer_is_classified_on_its_own(server):
    sender = _sender(server)
    server.script += [
        _answer(201, b'{"id":"t-1"}'),
        _answer(429, b"slow down", headers="Retry-After: 3\r\n"),
        _answer(400, b'{"error":"no messages"}', chunked=True),
        _answer(201, b""),
    ]
    outcomes = sender.send_batch([_thread(n) for n in range(4)])
    assert [(o.verdict, o.status, o.retry_after_s) for o in outcomes] == [
        (Verdict.DELIVERED, 201, None),
        (Verdict.RETRY, 429, 3.0),
        (Verdict.REJECTED, 400, None),
        (Verdict.DELIVERED, 201, None),
    ]
    assert "no messages" in outcomes[2].reason
    sender.close()


@pytest.mark.parametrize(
    "after_two",
    [_answer(201, b"{}", headers="Connection: close\r\n"), None],
    ids=["connection-close-header", "closed-without-a-word"],
)
def test_a_server_that_stops_answering_a_pipeline_gets_the_rest_again_on_a_fresh_connection(server, after_two):
    sender = _sender(server)
    server.script += [_answer(201, b"{}"), after_two]
    items = [_thread(n) for n in range(10)]
    assert [o.verdict for o in sender.send_batch(items)] == [Verdict.DELIVERED] * 10
    assert server.connections == 2
    bodies = [body for _, _, body in server.requests]
    assert set(bodies) == {item.body for item in items}
    # The request the server read before closing, unanswered, was sent again (uploads are idempotent).
    assert len(bodies) == (10 if after_two is not None else 11)
    sender.close()


def test_a_server_that_answers_one_request_per_connection_gets_them_all(server):
    sender = _sender(server)
    server.script += [_answer(201, b"{}", headers="Connection: close\r\n")] * 5
    assert [o.verdict for o in sender.send_batch([_thread(n) for n in range(5)])] == [Verdict.DELIVERED] * 5
    assert server.connections == 5 and len(server.requests) == 5
    sender.close()


def test_a_large_batch_goes_in_windows_the_socket_buffers_hold(server):
    from otel_context.delivery.transport import PIPELINE_WINDOW_BYTES

    sender = _sender(server)
    items = [_thread(n, size=PIPELINE_WINDOW_BYTES // 3) for n in range(8)]
    assert [o.verdict for o in sender.send_batch(items)] == [Verdict.DELIVERED] * 8
    assert [body for _, _, body in server.requests] == [item.body for item in items]
    assert server.connections == 1
    sender.close()


def test_a_pipeline_with_no_answer_at_all_fails_every_request_without_a_second_try(server):
    sender = _sender(server)
    server.script.append(b"HTTP/1.1 20")  # cut inside the first status line, then silence
    server.script.append(None)
    outcomes = sender.send_batch([_thread(n) for n in range(3)])
    assert [(o.verdict, o.status) for o in outcomes] == [(Verdict.RETRY, None)] * 3
    assert server.connections == 1
    sender.close()


PRIVATE = "azure.core.rest._http_response_impl.RestHttpClientTransportResponse"


def test_the_private_azure_core_response_keeps_its_shape(server):
    # `transport.rest_response` wraps each `http.client` answer of the client path in azure-core's private
    # RestHttpClientTransportResponse (azure-core has no public concrete `HttpResponse` over http.client).
    # When an azure-core release moves or reshapes it, this fails first and says what to look at.
    import http.client
    import importlib.metadata

    from azure.core.exceptions import HttpResponseError
    from azure.core.rest import HttpRequest, HttpResponse

    from otel_context.delivery.transport import HttpClientTransport

    changed = f"azure-core {importlib.metadata.version('azure-core')} changed {PRIVATE}, which otel_context.delivery"
    changed += ".transport.rest_response uses (ratings and proxied uploads go through it)"
    try:
        from azure.core.rest._http_response_impl import RestHttpClientTransportResponse
    except ImportError as exc:
        pytest.fail(f"{changed}: {exc}")
    assert issubclass(RestHttpClientTransportResponse, HttpResponse), f"{changed}: no longer an azure.core.rest one"

    server.script.append(_answer(429, b'{"error":"slow down"}', headers="Retry-After: 3\r\n"))
    transport = HttpClientTransport(timeout_s=5.0, proxies={})
    try:
        response = transport.send(HttpRequest("POST", f"{server.url}/api/v1/x", content=b"{}"))
        seen = {
            "type": type(response),
            "raw": type(response.internal_response),
            "status": response.status_code,
            "reason": response.reason,
            "retry_after": response.headers["retry-after"],  # case-insensitive
            "content_type": response.content_type,
            "content": response.content,
            "text": response.text(),
            "json": response.json(),
            "body": response.body(),  # the back-compat API older generated clients call
            "error": HttpResponseError(response=response).status_code,
        }
    except Exception as exc:
        pytest.fail(f"{changed}: {type(exc).__name__}: {exc}")
    finally:
        transport.close()
    assert seen == {
        "type": RestHttpClientTransportResponse,
        "raw": http.client.HTTPResponse,
        "status": 429,
        "reason": "Too Many Requests",
        "retry_after": "3",
        "content_type": "application/json",
        "content": b'{"error":"slow down"}',
        "text": '{"error":"slow down"}',
        "json": {"error": "slow down"},
        "body": b'{"error":"slow down"}',
        "error": 429,
    }, changed


WITHOUT_PRIVATE_RESPONSE = """
import sys
sys.modules["azure.core.rest._http_response_impl"] = None  # an azure-core release that moved the class
from tests.apps.common import chain, setup
provider, exporter = setup()
chain("Paris").invoke({"question": "Capital of France?"})
provider.shutdown()
print(exporter.counters.get("threads_uploaded"))
"""


def test_without_the_private_azure_core_response_threads_are_still_delivered(local_api, client, tmp_path):
    # Were the private class gone, importing the exporter must not fail (that would stop the SDK's whole
    # set-up, every exporter with it): the lean thread uploads never build one and still deliver.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    env.update(OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url, CONTEXT_API_TOKEN=API_TOKEN, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PRIVATE_RESPONSE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1"], result.stderr
    assert [dialogue(thread) for thread in read_threads(client)] == [turns([["Capital of France?", "Paris"]])]
