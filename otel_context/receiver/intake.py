"""OTLP request handling shared by the HTTP and gRPC receivers: decode, validate, ingest, answer.

Pure of transport: each receiver authenticates, reads the body, calls `OtlpIntake.export` and maps
`Rejected` to its own status codes. Decoding is bounded by the work limits (`otel_context/spans/otlp_limits.py`)
within one request; a body over `INLINE_DECODE_BYTES` decodes in a thread pool, bounded by `max_in_progress`
across requests, so the event loop keeps answering `/healthz` and other clients while a large request
decodes (a small one decodes on the loop: the hand-off would cost more than the work). The pipeline's
work (conversion, the session store, the spool) is never done on the loop: a request's spans go to the
intake queue (`intake_queue.py`, full: 503), with a spool once they are in the write-ahead log.

Under `serve --workers` with trace routing, a decoded request is split by the worker owning each trace
(`routing.py`): this worker's part is ingested here, the others are passed to their owners, and the
answer waits until every part is taken (with a spool: in a write-ahead log).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..config import ReceiverSettings
from ..model import SpanRecord
from ..pipeline import Pipeline
from ..serving import ThrottledLog
from ..spans.otlp import OtlpDecodeError, decode_json, decode_protobuf, records_from_request
from ..spans.otlp_limits import MalformedWire, RequestLimits, RequestTooLarge, check_protobuf
from .durable import DurableIntake
from .intake_queue import Jobs, RunNow
from .routing import TraceRouter
from .wal import WalUnavailable

T = TypeVar("T")

MAX_GZIP_MEMBERS = 64  # RFC 1952 allows several members; real senders write one
_logger = logging.getLogger(__name__)


class Rejected(Exception):
    """A request refused as a whole; `status` is the HTTP status the OTLP specification asks for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Accepted:
    response: ExportTraceServiceResponse


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request decoded and validated: its valid spans as records, and one reason per invalid span.

    With trace routing, `request` and `records` are this worker's part of it, and `elsewhere` holds
    the other owners' parts as OTLP bytes (`problems` are the whole request's).
    """

    request: ExportTraceServiceRequest
    records: list[SpanRecord]
    problems: list[str]
    elsewhere: dict[int, bytes] = field(default_factory=dict)


# Bodies up to this size are decoded on the event loop: a few hundred spans take 1-3 ms, less than the
# hand-off to a pool thread and back costs (two thread switches, a GIL hand-off each: measured 4-5 % of
# the sidecar's CPU per span with 100-span requests). Larger ones go to the pool, so that one big request
# never holds the loop for long. A gzip body counts by its inflated size (inflating stops past it).
INLINE_DECODE_BYTES = 256 * 1024


class OtlpIntake:
    """The one path from a request body to the pipeline, for both receivers.

    With `durable` (the sidecar runs with a spool), a request is in the write-ahead log, fsync'd,
    before the pipeline sees it and before the caller answers: only what is durable is acknowledged.
    Spans reach the pipeline through `jobs` (the sidecar's `IntakeQueue`, run on its own thread; by
    default at once, on the caller's thread); without a spool, an answer means queued in memory.
    With `router` (a worker of `serve --workers`), the parts of other workers' traces are passed to
    them, and the caller answers once each owner took its part (into its own write-ahead log, with a
    spool) or, where an owner did not, once this worker took it instead.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: ReceiverSettings,
        durable: DurableIntake | None = None,
        router: TraceRouter | None = None,
        jobs: Jobs | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.jobs: Jobs = jobs if jobs is not None else (durable.jobs if durable is not None else RunNow())
        self.settings = settings
        self.durable = durable
        self.router = router
        self.limits = RequestLimits(settings.max_spans, settings.max_attributes)
        self.rejections = ThrottledLog(_logger)
        self._kept = ThrottledLog(_logger)
        self._executor = ThreadPoolExecutor(max(1, settings.max_in_progress), thread_name_prefix="otel-context-decode")
        self._in_progress = 0

    async def export(self, body: bytes, *, json: bool, gzipped: bool = False) -> Accepted:
        """decode -> validate -> ingest. Raises `Rejected`, logged once per interval by status."""
        try:
            self.check_room()
            decoded = self._decode_inline(body, json, gzipped)
            if decoded is None:
                decoded = await self._decode_off_loop(body, json=json, gzipped=gzipped)
            if self.durable is None and not decoded.elsewhere:
                self.jobs.put(lambda: self.pipeline.accept(decoded.records), len(decoded.records))
                return answer(self.pipeline, decoded)
            try:  # the write-ahead log, then the pipeline: the request is decoded and validated
                # Shielded: what is written or passed on is also taken, even if the client hangs up meanwhile.
                await asyncio.shield(self._take_parts(decoded))
            except WalUnavailable as error:
                raise Rejected(503, f"otel-context cannot write its write-ahead log ({error}); retry later") from None
            return answer(self.pipeline, decoded)
        except Rejected as rejected:
            self.reject(rejected)
            raise

    def check_room(self) -> None:
        """`Rejected` 503 (counted) when the pipeline, the write-ahead log or the intake queue is full."""
        if self.pipeline.backlog_full() or (self.durable is not None and self.durable.full()):
            reason = self.pipeline.backlog_reason()
        elif self.jobs.full():
            reason = "has a full intake queue"
        else:
            return
        self.pipeline.counters.add("requests_pushed_back")
        raise Rejected(503, f"otel-context {reason}; retry later")

    async def _take_parts(self, decoded: Decoded) -> None:
        """This worker's part here, the others passed to their owners; returns once every part is taken
        (with a spool: in this worker's write-ahead log or its owner's). A part its owner did not take
        is taken here: assembled apart from the rest of its trace maybe, but never lost.

        Without a spool a request is acknowledged once it is in memory, and a part waiting to be passed on
        is in this worker's memory: the answer does not wait for the owner (waiting tied every request to
        both workers' event loops, and `--workers 2` served little more than one). A part the owner does
        not take is taken here when its answer comes, before a stopping worker drains its pipeline."""
        passed: list[tuple[int, bytes, asyncio.Future[bool | None]]] = []
        if self.router is not None:
            passed = [(owner, body, self.router.send(owner, body)) for owner, body in decoded.elsewhere.items()]
        await self._ingest(decoded.request, decoded.records)
        if self.durable is None:
            for owner, body, taken in passed:
                taken.add_done_callback(functools.partial(self._settled_in_memory, owner, body))
            return
        for owner, body, taken in passed:
            if not await taken:  # not taken, or unanswered: taken here too; a second copy is recognised
                self._kept.warning(
                    f"kept {owner}", f"otel-context serve: worker {owner} did not take spans of its traces; taken here"
                )
                request = ExportTraceServiceRequest.FromString(body)
                await self._ingest(request, records_from_request(request)[0], body)

    def _settled_in_memory(self, owner: int, body: bytes, taken: asyncio.Future[bool | None]) -> None:
        """Without a spool: what the owner's answer to a passed part means (on the loop, as it comes)."""
        answer = False if taken.cancelled() else taken.result()
        if answer is None:
            # Written to a live owner that did not answer in time: it will take the part when it reads
            # it. Without a spool nothing would recognise a second copy, so it is not taken here too.
            self._kept.warning(
                f"slow {owner}", f"otel-context serve: worker {owner} did not answer in time; spans left to it"
            )
        elif not answer:
            self._kept.warning(
                f"kept {owner}", f"otel-context serve: worker {owner} did not take spans of its traces; taken here"
            )
            records = records_from_request(ExportTraceServiceRequest.FromString(body))[0]
            self.jobs.put(lambda: self.pipeline.accept(records), len(records))

    async def take(self, body: bytes) -> bool:
        """A part another worker passes on (an OTLP request of traces this worker owns): True once it is
        taken, as a request is (with a spool: fsync'd in the write-ahead log, then in the pipeline)."""
        try:
            request = ExportTraceServiceRequest.FromString(body)  # serialized by a peer after validation
            records, _ = records_from_request(request)  # invalid spans were left out by the sender
            await self._ingest(request, records, body)
            return True
        except WalUnavailable as error:
            self._kept.warning("wal", f"otel-context serve: spans from another worker not taken: {error}")
        except Exception:
            _logger.exception("otel-context serve: spans from another worker could not be taken")
        return False

    async def _ingest(self, request: ExportTraceServiceRequest, records: list[SpanRecord], body: bytes = b"") -> None:
        """Into the pipeline, behind the write-ahead log when there is one (`body`: the request's bytes, if known)."""
        if self.durable is None:
            self.jobs.put(lambda: self.pipeline.accept(records), len(records))
        else:
            await self.durable.accept(request, records, body=body or None)

    def reject(self, rejected: Rejected) -> None:
        """Count a refusal in the log: one line per status per interval, never a traceback."""
        self.rejections.warning(
            str(rejected.status), f"otel-context serve: refused a request: {rejected.status} {rejected.message}"
        )

    def _decode_inline(self, body: bytes, json: bool, gzipped: bool) -> Decoded | None:
        """A small body, decoded on the loop (see `INLINE_DECODE_BYTES`); None when it is not small."""
        if len(body) > INLINE_DECODE_BYTES:
            return None
        if gzipped:
            try:
                body = gunzip(body, INLINE_DECODE_BYTES)
            except Rejected as rejected:
                if rejected.status == 413:  # inflates past the inline size: the pool inflates it again, bounded
                    return None
                raise
        return self.decode(body, json, gzipped=False)

    async def _decode_off_loop(self, body: bytes, *, json: bool, gzipped: bool) -> Decoded:
        return await self.decode_in_pool(self.decode, body, json, gzipped)

    async def decode_in_pool(self, decode: Callable[..., T], *args: object) -> T:
        """`decode(*args)` in the decoding pool, one bound for trace and logs bodies decoding at once
        (`max_in_progress`): 503 past it."""
        if self._in_progress >= self.settings.max_in_progress:
            raise Rejected(503, f"{self._in_progress} requests are decoding already; retry later")
        self._in_progress += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, decode, *args)
        finally:
            self._in_progress -= 1

    def decode(self, body: bytes, json: bool, gzipped: bool) -> Decoded:
        """Everything CPU-bound, on a pool thread: inflate, check the limits, parse, build records."""
        if gzipped:
            body = gunzip(body, self.settings.max_decompressed_bytes)
        request = decode(body, json=json, limits=self.limits)
        if self.router is None:
            records, problems = records_from_request(request)
            return Decoded(request, records, problems)
        # Split before building records: each worker converts only the spans of its own traces.
        split = self.router.split(request)
        mine = split.parts.pop(self.router.index, None)
        if mine is None:
            mine = ExportTraceServiceRequest()
        records, _ = records_from_request(mine)  # its invalid spans are in `split.rejected`
        elsewhere = {owner: part.SerializeToString() for owner, part in split.parts.items()}
        return Decoded(mine, records, split.rejected, elsewhere)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress every gzip member (RFC 1952), stopping at `limit` output bytes so a bomb costs no memory."""
    parts: list[bytes] = []
    size = 0
    rest = body
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as error:
            raise Rejected(400, f"malformed gzip body: {error}") from None
        parts.append(part)
        size += len(part)
        if size > limit:
            raise Rejected(413, f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise Rejected(400, "truncated gzip body")
        rest = inflater.unused_data
        if not rest.strip(b"\x00"):  # the end, or the zero padding some tools add
            return parts[0] if len(parts) == 1 else b"".join(parts)
    raise Rejected(413, f"gzip body has more than {MAX_GZIP_MEMBERS} members")


def decode(body: bytes, *, json: bool, limits: RequestLimits | None = None) -> ExportTraceServiceRequest:
    """The request, or `Rejected`: 413 past a work limit, 400 when malformed."""
    limits = limits or RequestLimits()
    try:
        if json:
            return decode_json(body, limits)
        check_protobuf(body, limits)
        return decode_protobuf(body)
    except RequestTooLarge as error:
        raise Rejected(413, str(error)) from None
    except MalformedWire as error:
        raise Rejected(400, f"malformed protobuf: {error}") from None
    except OtlpDecodeError as error:
        raise Rejected(400, str(error)) from None


def answer(pipeline: Pipeline, decoded: Decoded) -> Accepted:
    """The OTLP answer: success, or a partial success naming (and counting) the invalid spans, never a failure."""
    response = ExportTraceServiceResponse()
    problems = decoded.problems
    if problems:
        pipeline.counters.add("spans_rejected", len(problems))
        response.partial_success.rejected_spans = len(problems)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        response.partial_success.error_message = shown
    return Accepted(response)


def status_message(code: int, message: str, details: bytes = b"") -> bytes:
    """A `google.rpc.Status` (code = field 1, message = field 2, details = field 3), encoded by hand."""
    text = message.encode("utf-8", "replace")[:4096]
    return b"\x08" + encode_varint(code) + b"\x12" + encode_varint(len(text)) + text + details


def retry_info(seconds: int) -> bytes:
    """`details` for `status_message`: one `Any` holding a `google.rpc.RetryInfo` with `retry_delay`."""
    duration = b"\x08" + encode_varint(seconds)  # google.protobuf.Duration.seconds
    info = b"\x0a" + encode_varint(len(duration)) + duration  # RetryInfo.retry_delay
    type_url = b"type.googleapis.com/google.rpc.RetryInfo"
    any_message = b"\x0a" + encode_varint(len(type_url)) + type_url + b"\x12" + encode_varint(len(info)) + info
    return b"\x1a" + encode_varint(len(any_message)) + any_message


def encode_varint(value: int) -> bytes:
    """A protobuf base-128 varint (the receiver hand-encodes its small status messages; tests build wire bodies)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
