"""OTLP/gRPC receiver (`TraceService/Export`) on grpc.aio, sharing the HTTP receiver's decoding.

A generic handler receives the raw message bytes (no deserializer), so the token is checked before any
decoding, and the bytes take exactly the path of an OTLP/HTTP protobuf body: work limits, UTF-8 repair,
decoding off the event loop. Status codes as the OTLP specification says: INVALID_ARGUMENT (permanent)
for a malformed message, UNAUTHENTICATED, RESOURCE_EXHAUSTED past a limit (no retry info: permanent),
UNAVAILABLE with a `RetryInfo` when the queue is full or too many requests are decoding.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from ..config import ReceiverSettings
from .http import authorized
from .intake import OtlpIntake, Rejected, retry_info, status_message

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def export_handler(intake: OtlpIntake) -> grpc.GenericRpcHandler:
    """`TraceService/Export` taking and returning bytes, so nothing is parsed before authentication."""

    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        if not authorized(intake.settings, metadata.get("authorization")):
            rejected = Rejected(401, "missing or wrong bearer token")
            intake.reject(rejected)
            await _abort(context, rejected, intake.settings)
        try:
            accepted = await intake.export(body, json=False)
        except Rejected as rejected:
            await _abort(context, rejected, intake.settings)
        return accepted.response.SerializeToString()

    method = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})


async def _abort(context: grpc.aio.ServicerContext, rejected: Rejected, settings: ReceiverSettings) -> NoReturn:
    code = _STATUS.get(rejected.status, grpc.StatusCode.INVALID_ARGUMENT)
    trailing: tuple[tuple[str, bytes], ...] = ()
    if code is grpc.StatusCode.UNAVAILABLE:  # retryable; the delay is a hint the OTLP exporters honour
        details = status_message(code.value[0], rejected.message, retry_info(settings.retry_after_s))
        trailing = (("grpc-status-details-bin", details),)
    await context.abort(code, rejected.message, trailing_metadata=trailing)
    raise AssertionError("unreachable: abort raises")


def create_grpc_server(intake: OtlpIntake, port: int) -> tuple[grpc.aio.Server, int]:
    settings = intake.settings
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_decompressed_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # a connection must finish its handshake, and may idle, only as long as an HTTP one
            ("grpc.server_handshake_timeout_ms", int(settings.header_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", int(max(settings.header_timeout_s, 60) * 1000)),
        ]
    )
    from .logs import logs_handler  # `LogsService/Export`: GenAI events recorded as log records (evaluations)

    server.add_generic_rpc_handlers((export_handler(intake), logs_handler(intake)))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6 literals need brackets
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound
