"""One upload of one thread through `context-python`, classified as delivered, retryable or rejected.

The client's own azure-core retry policy is switched off (`retry_total=0`): our queue owns retries, so
the two never multiply. The token goes only to https, loopback, or an explicitly allowed endpoint.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import policies
from getcontext import ContextAPI
from getcontext.token import Credential

from ..config import ExporterSettings
from .item import ItemKind, QueueItem
from .outcome import SendOutcome, Verdict
from .retry import RETRYABLE_STATUS, parse_retry_after
from .transport import (
    FORK_GUARD,
    CapturingTransport,
    HttpClientTransport,
    PreparedPost,
    RawResponse,
    RequestCaptured,
    tls_context,
)

_UNPREPARED = object()

USER_AGENT = "otel-context"


class ContextSender:
    """Uploads thread bodies; one `ContextAPI` client per worker thread (HTTP sessions are not shared).

    Thread uploads take the lean path: the client builds the `POST` once per worker (its pipeline,
    its bearer policy, its headers), and each upload replays that request with its own body on a
    keep-alive socket (`PreparedPost`), classified exactly as the client's answer would be. Rating
    updates, proxied endpoints, and anything the client refuses to build go through the client itself.
    """

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._clients: list[ContextAPI] = []
        self._transports: list[HttpClientTransport | PreparedPost] = []
        self._lock = threading.Lock()
        # azure-core refuses a bearer token over plain http unless told; allowed only where config.validate
        # let it through (loopback or the explicit OTEL_EXPORTER_CONTEXT_INSECURE opt-in).
        self._enforce_https = not settings.plain_http
        # Built here, on the app's thread, and only when needed: see `transport.tls_context`.
        self._tls = None if settings.plain_http else tls_context()

    def _client(self) -> ContextAPI:
        client = getattr(self._local, "client", None)
        if client is None:
            with FORK_GUARD:  # see transport.FORK_GUARD: a fork must not land inside this
                transport = HttpClientTransport(timeout_s=self.settings.timeout_s, ssl_context=self._tls)
                client = make_client(self.settings.token or "", self.settings.endpoint, transport=transport)
            self._local.client = client
            self._local.transport = transport
            with self._lock:
                self._clients.append(client)
                self._transports.append(transport)
        return client

    def _options(self) -> dict[str, object]:
        timeout = self.settings.timeout_s
        return {
            "content_type": "application/json",
            "enforce_https": self._enforce_https,
            "connection_timeout": timeout,
            "read_timeout": timeout,
        }

    def _prepared(self) -> PreparedPost | None:
        """This worker's thread `POST`, built by the client's own pipeline; None where it must do the sending."""
        prepared = getattr(self._local, "prepared", _UNPREPARED)
        if prepared is not _UNPREPARED:
            return prepared  # type: ignore[return-value]
        prepared = None
        if not self._client_transport().proxied(self.settings.endpoint):
            with FORK_GUARD:  # see transport.FORK_GUARD: client building takes locks that are not ours
                template = make_client(
                    self.settings.token or "", self.settings.endpoint, transport=CapturingTransport()
                )
            try:
                with FORK_GUARD:
                    template.log.conversation_thread(b"", tenant_id=self.settings.tenant_id, **self._options())
            except RequestCaptured as captured:
                prepared = PreparedPost(captured.request, timeout_s=self.settings.timeout_s)
                with self._lock:
                    self._transports.append(prepared)
            except Exception:
                prepared = None  # e.g. a token over plain http refused: the client path says so per upload
            finally:
                template.close()
        self._local.prepared = prepared
        return prepared

    def _client_transport(self) -> HttpClientTransport:
        self._client()
        return self._local.transport

    def send(self, item: QueueItem) -> SendOutcome:
        """POST a thread, or PATCH ratings onto one; never raises."""
        (outcome,) = self.send_batch([item])
        return outcome

    def send_batch(self, items: Sequence[QueueItem]) -> list[SendOutcome]:
        """`send` for each item, in order; thread uploads on the lean path go out pipelined. Never raises."""
        outcomes: list[SendOutcome | None] = [None] * len(items)
        lean = [index for index, item in enumerate(items) if item.kind is ItemKind.THREAD]
        try:
            prepared = self._prepared() if lean else None
        except Exception:
            prepared = None
        if prepared is not None:
            for index, outcome in zip(lean, self._post_batch(prepared, [items[i].body for i in lean]), strict=True):
                outcomes[index] = outcome
        for index, item in enumerate(items):
            if outcomes[index] is None:
                outcomes[index] = self._send_with_client(item)
        return outcomes  # type: ignore[return-value]

    def _send_with_client(self, item: QueueItem) -> SendOutcome:
        """One request through the `context-python` client itself, classified."""
        options = self._options()
        try:
            log = self._client().log
            if item.kind is ItemKind.RATING:
                log.update_conversation_thread(item.thread_id, item.body, **options)
            else:
                log.conversation_thread(item.body, tenant_id=self.settings.tenant_id, **options)
        except ClientAuthenticationError as error:
            return SendOutcome(Verdict.REJECTED, 401, reason=_reason(error, "the Context API refused the token"))
        except HttpResponseError as error:
            status = error.status_code
            response = error.response
            headers = getattr(response, "headers", None) or {}
            retry_after = parse_retry_after(headers.get("Retry-After"))
            verdict = Verdict.RETRY if status in RETRYABLE_STATUS or status is None else Verdict.REJECTED
            return SendOutcome(verdict, status, retry_after, _reason(error, f"HTTP {status}"))
        except (ServiceRequestError, ServiceResponseError) as error:
            return SendOutcome(Verdict.RETRY, None, reason=f"{type(error).__name__}: {error.message}")
        except Exception as error:
            return SendOutcome(Verdict.RETRY, None, reason=f"{type(error).__name__}: {error}")
        return SendOutcome(Verdict.DELIVERED, 201)

    def _post_batch(self, prepared: PreparedPost, bodies: list[bytes]) -> list[SendOutcome]:
        """The lean uploads, pipelined, each classified by `_classify`."""
        try:
            answers: list[RawResponse | AzureError] = prepared.post_batch(bodies, self.settings.timeout_s)
        except Exception as error:
            failed = SendOutcome(Verdict.RETRY, None, reason=f"{type(error).__name__}: {error}")
            return [failed] * len(bodies)
        return [_classify(answer) for answer in answers]

    def abort(self) -> None:
        """Cut uploads in flight short (shutdown past its deadline): their sockets are shut down."""
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.abort()

    def close(self) -> None:
        with self._lock:
            clients, transports = self._clients, self._transports
            self._clients, self._transports = [], []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        for transport in transports:
            if isinstance(transport, PreparedPost):
                transport.close()

    def reset_after_fork(self) -> None:
        """In a forked child: new connections on first use; the parent's sockets are left to the parent."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients, self._transports = [], []


def make_client(
    token: str, endpoint: str, timeout_s: float = 10.0, *, transport: HttpClientTransport | None = None
) -> ContextAPI:
    """A `context-python` client with a lean pipeline and transport, for a background uploader.

    Kept: headers, user agent, content decoding, and the SDK's own bearer-token policy (which refuses
    plain http unless a call says `enforce_https=False`). Left out: retries (the delivery queue owns
    them, so the two never multiply), redirects (a token must not follow one), request logging, and
    distributed tracing (the exporter's own requests are never traced). The transport is one
    keep-alive connection (see `transport.py`): uploads cost the host app as little CPU as possible.
    """
    credential = Credential(token)
    return ContextAPI(
        credential=credential,
        endpoint=endpoint,
        transport=transport or HttpClientTransport(timeout_s=timeout_s),
        policies=[
            policies.HeadersPolicy(),
            policies.UserAgentPolicy(user_agent=USER_AGENT),
            policies.ContentDecodePolicy(),
            policies.BearerTokenCredentialPolicy(credential, "all"),
        ],
    )


def _classify(answer: RawResponse | AzureError) -> SendOutcome:
    """A lean upload's answer, classified as `send` classifies the client's: 201 only is delivered."""
    if isinstance(answer, (ServiceRequestError, ServiceResponseError)):
        return SendOutcome(Verdict.RETRY, None, reason=f"{type(answer).__name__}: {answer.message}")
    if isinstance(answer, AzureError):
        return SendOutcome(Verdict.RETRY, None, reason=f"{type(answer).__name__}: {answer}")
    response = answer
    status = response.status
    if status == 201:
        # The client decodes the answer into its model: undecodable JSON is its `DecodeError` (an
        # HTTP error, refused), any other body it cannot read a `DeserializationError` (retried).
        if not response.body:
            return SendOutcome(Verdict.DELIVERED, 201)
        if "json" not in response.headers.get("content-type", ""):
            return SendOutcome(Verdict.RETRY, None, reason="DeserializationError: the 201 answer is not JSON")
        try:
            decoded = json.loads(response.body)
        except ValueError:
            return SendOutcome(Verdict.REJECTED, 201, reason=_raw_reason(response, "HTTP 201"))
        if not isinstance(decoded, dict):
            return SendOutcome(Verdict.RETRY, None, reason="DeserializationError: the 201 answer is not an object")
        return SendOutcome(Verdict.DELIVERED, 201)
    if status == 401:
        return SendOutcome(Verdict.REJECTED, 401, reason=_raw_reason(response, "the Context API refused the token"))
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    verdict = Verdict.RETRY if status in RETRYABLE_STATUS else Verdict.REJECTED
    return SendOutcome(verdict, status, retry_after, _raw_reason(response, f"HTTP {status}"))


def _raw_reason(response: RawResponse, default: str) -> str:
    """As `_reason`, for a lean upload's answer."""
    text = response.text()[:300]
    return f"{default}: {text}" if text else default


def _reason(error: HttpResponseError, default: str) -> str:
    """The API's own words (its JSON `error`, else the first line of the body), never the request headers."""
    response = error.response
    text = ""
    if response is not None:
        try:
            text = response.text()[:300]
        except Exception:
            text = ""
    return f"{default}: {text}" if text else default
