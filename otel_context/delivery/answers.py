"""What an answer of the Context API proves: the one classifier of every request the sender makes.

Context appends a thread POST's messages and offers no idempotency key, so the question for each attempt
is whether the API may have stored it. Only these prove it did not, and make a POST safe to send again
(`Verdict.RETRY`):
- **nothing was written**: no connection (refused, DNS), a failed TLS handshake or proxy tunnel, a write
  that failed part-way (`transport.NotSent`). A server acts on a request only once it has read it whole,
  and HTTP/1.1 frames a POST's body by its length.
- **408** Request Timeout: the server gave up reading the request (RFC 9110 §15.5.9), so never acted on it.
- **429** Too Many Requests: rate limiting turns a request away before it is handled (`Retry-After` honoured).
- **503** Service Unavailable: the server is "currently unable to handle the request" (RFC 9110 §15.6.4);
  it is what load balancers and the API answer while it is down or overloaded (`Retry-After` honoured).
Answers that refuse the request for good prove the same, and are never sent again (`Verdict.REJECTED`): 400,
401, 403, 404 (a POST's endpoint missing), 413, 422 and every other 4xx; a redirect (3xx: the token never
follows one, and the endpoint is then wrong).
Everything else after the request was written may have been stored (`Verdict.UNKNOWN`, read back before any
second try): no answer, a timeout, a reset, a close, an answer too large or cut short; 500 (the handler may
have failed after its write), 502 and 504 (a gateway whose upstream may have stored it), any other 5xx; a 201
whose body the client could not read (something answered that is not the API as documented) or a 2xx other
than 201.

Requests that may be repeated harmlessly (`transport.IDEMPOTENT_METHODS`: a rating PATCH sets a value at an
index, a GET reads) are never UNKNOWN: what would be UNKNOWN for a POST is RETRY for them. A PATCH's 404 is
RETRY too: its thread may not be stored yet (its POST still queued or in flight).
"""

from __future__ import annotations

import json

from .outcome import SendOutcome, Verdict
from .retry import parse_retry_after
from .transport import IDEMPOTENT_METHODS, Answer, AnswerTooLarge, NoAnswer, NotSent

CREATED = 201  # the one answer that delivers a thread POST
# Statuses that prove the API did not act on the request, worth another try (after `Retry-After`).
NOT_HANDLED_STATUS = frozenset({408, 429, 503})
# Statuses that refuse a request for good (any other 4xx too, and 3xx).
REFUSED_STATUS = frozenset({400, 401, 403, 404, 413, 422})
# Statuses after which a POST may have been stored (any other 5xx too, and 2xx other than 201).
MAY_BE_STORED_STATUS = frozenset({500, 502, 504})


# The outcome of every delivered thread POST: one object, shared (a `SendOutcome` is frozen).
POSTED = SendOutcome(Verdict.DELIVERED, CREATED)


def classify(method: str, answer: Answer | BaseException) -> SendOutcome:
    """The verdict on one attempt: its answer, or the error that stands for it (`NotSent`, `NoAnswer`, or any
    other exception raised before anything was sent)."""
    if method == "POST" and type(answer) is Answer and answer.status == CREATED:  # the upload's usual answer, first
        body = answer.body
        if body and "json" in (answer.headers.get("content-type") or ""):
            # A JSON object, as the API answers: read by the decoder's own scanner, without `json.loads`' encoding
            # detection and whitespace matching; anything else (or nothing read) goes the long way, `_unreadable`.
            try:
                decoded, end = _SCAN(body.decode("ascii"), 0)
            except (ValueError, StopIteration):
                pass
            else:
                if end == len(body) and type(decoded) is dict:
                    return POSTED
        unreadable = _unreadable(answer)
        if not unreadable:
            return POSTED
        return SendOutcome(Verdict.UNKNOWN, CREATED, reason=f"an unreadable 201: {unreadable}")
    idempotent = method in IDEMPOTENT_METHODS
    if isinstance(answer, NoAnswer):
        cause = answer.__cause__ or answer
        what = "an answer too large" if isinstance(cause, AnswerTooLarge) else "no answer"
        verdict = Verdict.RETRY if idempotent else Verdict.UNKNOWN
        return SendOutcome(verdict, None, reason=f"{what} after the request was written: {_error(cause)}")
    if isinstance(answer, BaseException):
        cause = (answer.__cause__ or answer) if isinstance(answer, NotSent) else answer
        return SendOutcome(Verdict.RETRY, None, reason=f"not sent: {_error(cause)}")
    status = answer.status
    if 200 <= status < 300:
        if method == "POST":
            if status != CREATED:
                return SendOutcome(Verdict.UNKNOWN, status, reason=_reason(answer, f"HTTP {status}, not 201"))
            unreadable = _unreadable(answer)
            if unreadable:
                return SendOutcome(Verdict.UNKNOWN, status, reason=f"an unreadable 201: {unreadable}")
        return SendOutcome(Verdict.DELIVERED, status)
    retry_after = parse_retry_after(answer.headers.get("retry-after"))
    if status == 401:
        return SendOutcome(Verdict.REJECTED, 401, retry_after, _reason(answer, "the Context API refused the token"))
    if status in NOT_HANDLED_STATUS or (idempotent and status >= 500) or (method == "PATCH" and status == 404):
        verdict = Verdict.RETRY
    elif 300 <= status < 500:
        verdict = Verdict.REJECTED
    else:
        verdict = Verdict.UNKNOWN
    return SendOutcome(verdict, status, retry_after, _reason(answer, f"HTTP {status}"))


def _unreadable(answer: Answer) -> str:
    """Why the client could not read a 201's body (as its model: empty, or a JSON object); "" when it can."""
    body = answer.body
    if not body:
        return ""
    if "json" not in (answer.headers.get("content-type") or ""):
        return "not JSON"
    try:
        decoded = json.loads(body)
    except ValueError:
        return "undecodable JSON"
    return "" if isinstance(decoded, dict) else "not a JSON object"


_SCAN = json.JSONDecoder().scan_once  # (value, end) of the JSON value at an index of a text


def _reason(answer: Answer, default: str) -> str:
    """The API's own words (the first 300 characters of its body), never the request's headers."""
    text = answer.text()[:300]
    return f"{default}: {text}" if text else default


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
