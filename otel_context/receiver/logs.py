"""OTLP logs in: `POST /v1/logs` (protobuf and JSON) and the gRPC `LogsService/Export`, for the GenAI events
recorded as log records (`gen_ai.evaluation.result`: evaluations of a run, which join its thread).

The same door as traces (`http.py`, `grpc.py`, `intake.py`): the bearer token checked before anything is
read or decoded, the body and decompressed-size bounds, the work bound walked on the raw bytes (log records
count as spans), decoding of a large body in the shared pool bounded by `max_in_progress` (503 past it), and
the same statuses and error bodies. Evaluations are held in memory until their run's thread is built, never
in the write-ahead log: a crash of the sidecar loses those not yet joined to a thread.
"""

from __future__ import annotations

import json as jsonlib

import grpc
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from ..model import LogEvent
from ..spans.otlp import OtlpDecodeError
from ..spans.otlp_limits import MalformedWire, RequestTooLarge
from ..spans.otlp_logs import decode_logs_json, decode_logs_protobuf, events_from_logs
from . import grpc as grpc_receiver
from . import http as http_receiver
from .intake import INLINE_DECODE_BYTES, OtlpIntake, Rejected, gunzip

SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class LogsIntake:
    """Logs requests into the pipeline, within the bounds of the trace intake it shares (pool, limits, log)."""

    def __init__(self, intake: OtlpIntake) -> None:
        self.intake = intake

    async def export(self, body: bytes, *, json: bool, gzipped: bool = False) -> ExportLogsServiceResponse:
        """decode -> events -> pipeline; raises `Rejected` (logged once per interval by status)."""
        intake = self.intake
        try:
            if intake.jobs.full():
                intake.pipeline.counters.add("requests_pushed_back")
                raise Rejected(503, "otel-context has a full intake queue; retry later")
            if len(body) <= INLINE_DECODE_BYTES and not gzipped:
                events, problems = self.decode(body, json, False)
            else:
                events, problems = await self.intake.decode_in_pool(self.decode, body, json, gzipped)
            if events:  # matched on the intake queue's thread, in order with the spans queued before them
                intake.jobs.put(lambda: intake.pipeline.accept_events(events), len(events))
        except Rejected as rejected:
            intake.reject(rejected)
            raise
        response = ExportLogsServiceResponse()
        if problems:
            intake.pipeline.counters.add("log_records_rejected", len(problems))
            response.partial_success.rejected_log_records = len(problems)
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            response.partial_success.error_message = shown
        return response

    def decode(self, body: bytes, json: bool, gzipped: bool) -> tuple[list[LogEvent], list[str]]:
        """Inflate, check the limits, parse, read the events; `Rejected` 413 past a limit, 400 when malformed."""
        if gzipped:
            body = gunzip(body, self.intake.settings.max_decompressed_bytes)
        try:
            limits = self.intake.limits
            request = decode_logs_json(body, limits) if json else decode_logs_protobuf(body, limits)
        except RequestTooLarge as error:
            raise Rejected(413, str(error).replace("spans", "log records")) from None
        except MalformedWire as error:
            raise Rejected(400, f"malformed protobuf: {error}") from None
        except OtlpDecodeError as error:
            raise Rejected(400, str(error)) from None
        return events_from_logs(request)


LOGS = web.AppKey("logs", LogsIntake)


def add_logs_route(app: web.Application, intake: OtlpIntake) -> None:
    """`POST /v1/logs` on the receiver's HTTP app."""
    app[LOGS] = LogsIntake(intake)
    app.router.add_post("/v1/logs", post_logs)


async def post_logs(request: web.Request) -> web.Response:
    """As `http.post_traces`, for an `ExportLogsServiceRequest`."""
    settings = request.app[http_receiver.SETTINGS]
    logs: LogsIntake = request.app[LOGS]
    content_type = request.content_type
    is_json = content_type == http_receiver.JSON
    try:
        if not http_receiver.authorized(settings, request.headers.get("Authorization")):
            raise Rejected(401, "missing or wrong bearer token")
        if content_type not in (http_receiver.PROTOBUF, http_receiver.JSON):
            raise Rejected(
                415, f"unsupported content type {content_type!r}; send {http_receiver.PROTOBUF} or {http_receiver.JSON}"
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise Rejected(415, f"unsupported content encoding {encoding!r}; send gzip or none")
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            raise Rejected(413, f"body exceeds {settings.max_body_bytes} bytes")
        body = await http_receiver._read_body(request, settings)
    except Rejected as rejected:
        logs.intake.reject(rejected)
        return http_receiver._error(rejected, is_json, settings)
    try:
        response = await logs.export(body, json=is_json, gzipped=encoding == "gzip")
    except Rejected as rejected:  # already logged
        return http_receiver._error(rejected, is_json, settings)
    if is_json:
        payload = json_format.MessageToDict(response)
        return web.Response(body=jsonlib.dumps(payload).encode(), content_type=http_receiver.JSON)
    return web.Response(body=response.SerializeToString(), content_type=http_receiver.PROTOBUF)


def logs_handler(intake: OtlpIntake) -> grpc.GenericRpcHandler:
    """`LogsService/Export` taking and returning bytes: authenticated before anything is parsed."""
    logs = LogsIntake(intake)

    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        if not http_receiver.authorized(intake.settings, metadata.get("authorization")):
            rejected = Rejected(401, "missing or wrong bearer token")
            intake.reject(rejected)
            await grpc_receiver._abort(context, rejected, intake.settings)
        try:
            response = await logs.export(body, json=False)
        except Rejected as rejected:
            await grpc_receiver._abort(context, rejected, intake.settings)
        return response.SerializeToString()

    method = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})
