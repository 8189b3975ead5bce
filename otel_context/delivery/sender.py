"""Uploads through `context-python`: the client builds each request, `UploadTransport` sends it, and
`answers.classify` says what the answer proves (delivered, worth another try, refused, or maybe stored).

The client's own azure-core retry policy never runs (it never sees an answer): our retry layer owns retries, so
the two never multiply. The token goes only to https, loopback, or an explicitly allowed endpoint.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.pipeline import policies
from getcontext import ContextAPI
from getcontext.token import Credential

from ..config import ExporterSettings
from .answers import POSTED, classify
from .item import ItemKind, QueueItem
from .outcome import SendOutcome, Verdict
from .transport import (
    FORK_GUARD,
    READ_BACK_LIMIT,
    CapturingTransport,
    PreparedRequest,
    RequestCaptured,
    UploadTransport,
    tls_context,
)

USER_AGENT = "otel-context"
# The fields of a stored message `stored_messages` always gives (None when absent; `type` "message", `metadata` {}).
MESSAGE_FIELDS = ("role", "message", "type", "event_timestamp", "metadata")


@dataclass(slots=True)
class _Worker:
    """One upload worker's own: its connection, its request builder, and the thread POST built once."""

    transport: UploadTransport
    builder: ContextAPI
    thread_post: PreparedRequest | Exception | None = None


class ContextSender:
    """Sends thread POSTs, rating PATCHes and thread read-backs; one connection per worker thread.

    A thread upload costs the app little CPU: the client's pipeline builds the `POST` once per worker (its
    bearer policy, headers, user agent, `tenant_id` query) and its head is made into bytes then, and each
    upload writes that head with its own `Content-Length` and body on the worker's keep-alive connection. A
    rating PATCH and a read-back GET are built by the client per call (their path holds the thread id); they
    are rare.
    """

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._aborts = 0  # `abort()` calls so far: a batch under way stops sending when it changes
        # azure-core refuses a bearer token over plain http unless told; allowed only where config.validate
        # let it through (loopback or the explicit OTEL_EXPORTER_CONTEXT_INSECURE opt-in).
        self._enforce_https = not settings.plain_http
        # Built here, on the app's thread, and only when needed: see `transport.tls_context`.
        self._tls = None if settings.plain_http else tls_context()

    def _worker(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None:
            with FORK_GUARD:  # see transport.FORK_GUARD: client building takes locks that are not ours
                builder = request_builder(self.settings.token or "", self.settings.endpoint)
            worker = _Worker(UploadTransport(timeout_s=self.settings.timeout_s, ssl_context=self._tls), builder)
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        return worker

    def _build(self, worker: _Worker, call: Callable[[ContextAPI], object]) -> PreparedRequest:
        """The request `call` makes the client build (raises what the client raises, e.g. a token over http)."""
        try:
            with FORK_GUARD:
                call(worker.builder)
        except RequestCaptured as captured:
            return PreparedRequest.of(captured.request)
        raise RuntimeError("the client sent no request")  # pragma: no cover - every operation sends one

    def _thread_post(self, worker: _Worker) -> PreparedRequest:
        """This worker's thread `POST`, built by the client once (its body is each upload's own)."""
        if worker.thread_post is None:
            try:
                worker.thread_post = self._build(
                    worker,
                    lambda client: client.log.conversation_thread(
                        b"", tenant_id=self.settings.tenant_id, content_type="application/json", **self._options()
                    ),
                )
            except Exception as error:  # e.g. a token over plain http refused: each upload says so
                worker.thread_post = error
        if isinstance(worker.thread_post, Exception):
            raise worker.thread_post
        return worker.thread_post

    def _options(self) -> dict[str, Any]:
        return {"enforce_https": self._enforce_https}

    def send_batch(self, items: Sequence[QueueItem]) -> list[SendOutcome]:
        """`send` for each item, one after another on this worker's connection. Never raises.

        After an `abort()` the items not yet sent are not sent (RETRY: nothing was written).
        """
        aborts = self._aborts
        outcomes = []
        for item in items:
            if self._aborts != aborts:
                outcomes.append(SendOutcome(Verdict.RETRY, None, reason="not sent: cut short by a shutdown"))
            else:
                outcomes.append(self._send_one(item))
        return outcomes

    def _send_one(self, item: QueueItem) -> SendOutcome:
        """POST a thread, or PATCH ratings onto one; never raises."""
        if item.kind is ItemKind.THREAD:
            worker = getattr(self._local, "worker", None)
            request = None if worker is None else worker.thread_post
            if type(request) is PreparedRequest:  # this worker's POST, built: each upload's usual way
                try:
                    answer = worker.transport.exchange(request, item.body)  # type: ignore[union-attr]
                except Exception as error:  # NotSent, NoAnswer
                    return self._scrubbed(classify("POST", error))
                outcome = classify("POST", answer)
                return outcome if outcome is POSTED else self._scrubbed(outcome)
        method = "POST" if item.kind is ItemKind.THREAD else "PATCH"
        try:
            worker = self._worker()
            if item.kind is ItemKind.THREAD:
                request, body = self._thread_post(worker), item.body
            else:
                request = self._build(
                    worker,
                    lambda client: client.log.update_conversation_thread(
                        item.thread_id, item.body, content_type="application/json", **self._options()
                    ),
                )
                body = None
            answer = worker.transport.exchange(request, body)
        except Exception as error:  # NotSent, NoAnswer, or the client refusing to build the request
            return self._scrubbed(classify(method, error))
        return self._scrubbed(classify(method, answer))

    # `send_batch` of one item (no abort can come before its first), without the batch: a frame less per upload.
    send = _send_one

    def stored_messages(self, thread_id: str) -> list[dict[str, Any]] | SendOutcome | None:
        """The messages of a stored thread (`GET /api/v1/conversations/{id}`), in stored order, as plain dicts
        with at least `MESSAGE_FIELDS`; None when the API has no such thread (404: nothing of it is stored);
        a RETRY `SendOutcome` when it cannot be read (no connection, no answer, another status, an answer
        above `READ_BACK_LIMIT` or not a thread). Never raises.

        `tenant_id`, when set, goes in the query as on a POST (the client's `conversation` takes no
        `tenant_id`; it is passed as a query parameter). `event_timestamp` is the API's text, not parsed.
        """
        try:
            worker = self._worker()
            params = {"tenant_id": self.settings.tenant_id} if self.settings.tenant_id else {}
            request = self._build(
                worker, lambda client: client.conversation(thread_id, params=params, **self._options())
            )
            answer = worker.transport.exchange(request, limit=READ_BACK_LIMIT)
        except Exception as error:  # NotSent, NoAnswer, or the client refusing to build the request
            return self._scrubbed(SendOutcome(Verdict.RETRY, None, reason=classify("GET", error).reason))
        if answer.status == 404:
            return None
        if answer.status != 200:
            refused = classify("GET", answer)
            return self._scrubbed(SendOutcome(Verdict.RETRY, answer.status, refused.retry_after_s, refused.reason))
        try:
            messages = json.loads(answer.body)["messages"]
            if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
                raise TypeError("messages is not a list of objects")
        except (ValueError, KeyError, TypeError) as error:
            return SendOutcome(Verdict.RETRY, 200, reason=f"an unreadable thread: {type(error).__name__}: {error}")
        for message in messages:
            for name in MESSAGE_FIELDS:
                message.setdefault(name, None)
            if message["type"] is None:
                message["type"] = "message"  # the API model's default
            if message["metadata"] is None:
                message["metadata"] = {}
        return messages

    def _scrubbed(self, outcome: SendOutcome) -> SendOutcome:
        """`outcome` with the token taken out of its reason (an answer could echo the request)."""
        token = self.settings.token
        if token and token in outcome.reason:
            return SendOutcome(
                outcome.verdict, outcome.status, outcome.retry_after_s, outcome.reason.replace(token, "***")
            )
        return outcome

    def abort(self) -> None:
        """Cut uploads in flight short (shutdown past its deadline): their sockets are shut down, and the rest
        of their batches is not sent."""
        self._aborts += 1
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.transport.abort()

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.transport.close()
            with contextlib.suppress(Exception):
                worker.builder.close()

    def reset_after_fork(self) -> None:
        """In a forked child: new connections on first use; the parent's sockets are left to the parent."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._workers = []


def request_builder(token: str, endpoint: str) -> ContextAPI:
    """A `context-python` client that builds requests and sends none (`CapturingTransport`).

    Kept: headers, user agent, and the SDK's own bearer-token policy (which refuses plain http unless a call
    says `enforce_https=False`). Left out: retries (the retry layer owns them, so the two never multiply),
    redirects (a token must not follow one), request logging, and distributed tracing (the exporter's own
    requests are never traced).
    """
    credential = Credential(token)
    return ContextAPI(
        credential=credential,
        endpoint=endpoint,
        transport=CapturingTransport(),
        policies=[
            policies.HeadersPolicy(),
            policies.UserAgentPolicy(user_agent=USER_AGENT),
            policies.BearerTokenCredentialPolicy(credential, "all"),
        ],
    )
