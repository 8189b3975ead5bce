"""OTLP request handling shared by the HTTP and gRPC receivers: decode, convert, answer.

Pure of transport: each receiver maps `Rejected` to its own status codes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..bridge import Bridge
from ..spans.otlp import OtlpDecodeError, decode_json, decode_protobuf, records_from_request


class Rejected(Exception):
    """A request refused as a whole; `status` is the HTTP status the OTLP specification asks for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Accepted:
    response: ExportTraceServiceResponse
    spans: int


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress gzip, stopping at `limit` output bytes so a gzip bomb costs no memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise Rejected(400, f"malformed gzip body: {error}") from None
    if len(out) > limit:
        raise Rejected(413, f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise Rejected(400, "truncated gzip body")
    return out


def decode(body: bytes, *, json: bool) -> ExportTraceServiceRequest:
    try:
        return decode_json(body) if json else decode_protobuf(body)
    except OtlpDecodeError as error:
        raise Rejected(400, str(error)) from None


def ingest(bridge: Bridge, request: ExportTraceServiceRequest) -> Accepted:
    """Hand a decoded request to the bridge; invalid spans make a partial success, never a failure."""
    if bridge.backlog_full():
        bridge.counters.add("requests_pushed_back")
        raise Rejected(503, "otel-context's delivery queue is full; retry later")
    records, problems = records_from_request(request)
    bridge.accept(records)
    response = ExportTraceServiceResponse()
    if problems:
        bridge.counters.add("spans_rejected", len(problems))
        response.partial_success.rejected_spans = len(problems)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        response.partial_success.error_message = shown
    return Accepted(response, len(records))


def status_message(code: int, message: str) -> bytes:
    """A `google.rpc.Status` (code = field 1, message = field 2), encoded by hand: the body of OTLP errors."""
    text = message.encode("utf-8", "replace")[:4096]
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
