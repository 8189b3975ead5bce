"""OTLP/gRPC receiver (`TraceService/Export`) with `opentelemetry-proto`'s generated stubs on grpc.aio."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..bridge import Bridge
from ..config import ReceiverSettings
from .durable import DurableIntake
from .http import authorized
from .otlp_io import Rejected, ingest

_STATUS = {401: grpc.StatusCode.UNAUTHENTICATED, 503: grpc.StatusCode.UNAVAILABLE}


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, bridge: Bridge, settings: ReceiverSettings, intake: DurableIntake | None = None) -> None:
        self.bridge = bridge
        self.settings = settings
        self.intake = intake

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        metadata = dict(context.invocation_metadata() or ())
        try:
            if not authorized(self.settings, metadata.get("authorization")):
                raise Rejected(401, "missing or wrong bearer token")
            return (await ingest(self.bridge, request, self.intake)).response
        except Rejected as rejected:
            # UNAVAILABLE is retryable for OTLP clients, so a full queue makes the Collector retry.
            await context.abort(_STATUS.get(rejected.status, grpc.StatusCode.INVALID_ARGUMENT), rejected.message)
            raise  # unreachable: abort raises


def create_grpc_server(
    bridge: Bridge, settings: ReceiverSettings, port: int, intake: DurableIntake | None = None
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_decompressed_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(bridge, settings, intake), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6 literals need brackets
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound
