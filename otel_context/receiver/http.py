"""OTLP/HTTP receiver (`POST /v1/traces`) on aiohttp, answering as the OTLP specification says.

200 with an `ExportTraceServiceResponse` in the request's content type (a Collector treats an
unparseable 2xx body as a permanent error), partial success for invalid spans, 400 malformed,
401 without the bearer token, 413 too large (also after decompression, or past a work limit), 415
unsupported type or encoding, 408 for a body that does not arrive in time, 503 with `Retry-After` when
the delivery queue is full or too many requests are decoding, so the Collector retries.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from ..config import ReceiverSettings
from .intake import OtlpIntake, Rejected, status_message

INTAKE = web.AppKey("intake", OtlpIntake)
SETTINGS = web.AppKey("settings", ReceiverSettings)
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_GRPC_CODE = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 503: 14}  # google.rpc.Code for each HTTP status


def create_receiver_app(intake: OtlpIntake) -> web.Application:
    app = web.Application(client_max_size=intake.settings.max_body_bytes)
    app[INTAKE] = intake
    app[SETTINGS] = intake.settings
    app.router.add_post("/v1/traces", post_traces)
    from .logs import add_logs_route  # `POST /v1/logs`: GenAI events recorded as log records (evaluations)

    add_logs_route(app, intake)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    return app


def authorized(settings: ReceiverSettings, header: str | None) -> bool:
    """`Authorization: Bearer <token>`, the scheme in any case (RFC 7235), compared in constant time."""
    if not settings.token:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), settings.token.encode())


async def post_traces(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    content_type = request.content_type
    is_json = content_type == JSON
    try:
        if not authorized(settings, request.headers.get("Authorization")):
            raise Rejected(401, "missing or wrong bearer token")
        if content_type not in (PROTOBUF, JSON):
            raise Rejected(415, f"unsupported content type {content_type!r}; send {PROTOBUF} or {JSON}")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise Rejected(415, f"unsupported content encoding {encoding!r}; send gzip or none")
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            raise Rejected(413, f"body exceeds {settings.max_body_bytes} bytes")
        body = await _read_body(request, settings)
    except Rejected as rejected:
        request.app[INTAKE].reject(rejected)
        return _error(rejected, is_json, settings)
    try:
        accepted = await request.app[INTAKE].export(body, json=is_json, gzipped=encoding == "gzip")
    except Rejected as rejected:  # already logged
        return _error(rejected, is_json, settings)
    if is_json:
        payload = json_format.MessageToDict(accepted.response)
        return web.Response(body=json.dumps(payload).encode(), content_type=JSON)
    return web.Response(body=accepted.response.SerializeToString(), content_type=PROTOBUF)


async def _read_body(request: web.Request, settings: ReceiverSettings) -> bytes:
    try:
        return await asyncio.wait_for(request.read(), settings.body_timeout_s)
    except web.HTTPRequestEntityTooLarge:
        raise Rejected(413, f"body exceeds {settings.max_body_bytes} bytes") from None
    except asyncio.TimeoutError:
        raise Rejected(408, f"body not received within {settings.body_timeout_s:g} s") from None


def _error(rejected: Rejected, is_json: bool, settings: ReceiverSettings) -> web.Response:
    headers: dict[str, str] = {}
    if rejected.status in (429, 503):
        headers["Retry-After"] = str(settings.retry_after_s)
    if rejected.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if rejected.status == 408:  # the rest of the body may still come: no request can follow on this connection
        headers["Connection"] = "close"
    code = _GRPC_CODE.get(rejected.status, 2)
    if is_json:
        body = json.dumps({"code": code, "message": rejected.message}).encode()
        return web.Response(status=rejected.status, body=body, content_type=JSON, headers=headers)
    body = status_message(code, rejected.message)
    return web.Response(status=rejected.status, body=body, content_type=PROTOBUF, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    pipeline = request.app[INTAKE].pipeline
    status = "backlogged" if pipeline.backlog_full() else "ok"
    return web.json_response({"status": status, "threads_queued": pipeline.counters.get("threads_queued")})


async def stats(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not authorized(settings, request.headers.get("Authorization")):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    pipeline = request.app[INTAKE].pipeline
    body: dict[str, Any] = {"counters": pipeline.counters.snapshot(), "delivery": pipeline.settings.describe()}
    return web.json_response(body)
