"""`serve --workers`: every span goes to the worker that owns its trace, so a trace is assembled in one process.

The kernel hands connections, not traces, to workers, and a Collector may send a trace's spans in two
requests over two connections. Each trace id has one owning worker (a hash). The worker that decodes a
request splits it by owner (`split_request`: one OTLP request per owner, each span in exactly one,
its resource and scope kept) and passes every other owner's part to that owner over a Unix socket (in
a private directory of the supervisor) as OTLP bytes, which the owner takes exactly as it takes a
request of its own (`OtlpIntake.take`): with a spool, into its write-ahead log, fsync'd, and only then
does it answer "taken" (the Collector's rule, acknowledge only after the write, between workers).
The receiving worker answers its client once every part is durable, in its own log or its owner's.
A part its owner does not take (restarting, stopping, failing) is taken by the receiving worker
itself, so nothing acknowledged is lost. A part written to an owner that does not answer within
`ANSWER_TIMEOUT_S` may still be taken by it: with a spool the receiving worker takes it too (its second
copy is recognised: the buffer drops duplicate spans, the shared spool a run it holds or delivered by
its segment key); without a spool nothing would recognise a second copy, so it is left to the owner.

The protocol, on one connection per pair of workers: the sender writes a 4-byte big-endian length and
an `ExportTraceServiceRequest` (the parts waiting for that owner, concatenated: two serialized
messages concatenated parse as their merge, so their `resource_spans` add up); the owner answers one
byte, `1` taken, `0` not. Nothing is unpickled: a peer's bytes are parsed as OTLP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from ..spans.otlp import _id_problem, records_from_request

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 10.0  # a peer that has not taken a part by then: the sender takes it itself
BATCH_BYTES = 4 * 1024 * 1024  # parts waiting for one owner go in one message up to about this size
TAKEN, NOT_TAKEN = b"1", b"0"

Take = Callable[[bytes], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Split:
    """A request divided by owner: each valid span in the part of its trace's owner, the invalid in none."""

    parts: dict[int, ExportTraceServiceRequest]
    rejected: list[str]  # one reason per invalid span, worded and placed as `records_from_request` does


def split_request(request: ExportTraceServiceRequest, owner_of: Callable[[bytes], int]) -> Split:
    """`request`'s spans by the owner of their trace id, each part keeping its spans' resource and scope.

    A request whose valid spans all have one owner is that owner's part as it is (no copy).
    """
    owners: list[list[list[int]]] = []  # per resource, per scope, per span: its owner, 0 if invalid
    seen: set[int] = set()
    invalid = False
    for resource_spans in request.resource_spans:
        per_resource = []
        for scope_spans in resource_spans.scope_spans:
            row = []
            for span in scope_spans.spans:
                trace_id = span.trace_id
                if _id_problem(trace_id, span.span_id, span.parent_span_id):
                    invalid = True
                    row.append(0)
                else:
                    owner = owner_of(trace_id)
                    seen.add(owner)
                    row.append(owner)
            per_resource.append(row)
        owners.append(per_resource)
    if not invalid and len(seen) <= 1:
        return Split({owner: request for owner in seen}, [])
    rejected = records_from_request(request)[1] if invalid else []  # rare: the exact words, at the cost of a pass
    parts: dict[int, ExportTraceServiceRequest] = {}
    for resource_spans, per_resource in zip(request.resource_spans, owners, strict=True):
        resources: dict[int, ResourceSpans] = {}  # owner -> this resource in its part
        for scope_spans, row in zip(resource_spans.scope_spans, per_resource, strict=True):
            scopes: dict[int, ScopeSpans] = {}  # owner -> this scope in its part
            for span, owner in zip(scope_spans.spans, row, strict=True):
                if not owner:
                    continue
                scope = scopes.get(owner)
                if scope is None:
                    resource = resources.get(owner)
                    if resource is None:
                        part = parts.get(owner)
                        if part is None:
                            part = parts[owner] = ExportTraceServiceRequest()
                        resource = resources[owner] = part.resource_spans.add()
                        resource.resource.CopyFrom(resource_spans.resource)
                        resource.schema_url = resource_spans.schema_url
                    scope = scopes[owner] = resource.scope_spans.add()
                    scope.scope.CopyFrom(scope_spans.scope)
                    scope.schema_url = scope_spans.schema_url
                scope.spans.add().CopyFrom(span)  # faster than `extend` in upb
    return Split(parts, rejected)


class TraceRouter:
    """In a worker of `serve --workers`: which worker owns a trace, and the socket between workers.

    `send` passes a part to its owner and says whether the owner took it; `start(take)` listens for the
    parts other workers pass here and hands each to `take`, answering what it returns. A peer that
    cannot take parts (restarting, stopping) gets nothing: every part not taken is the sender's to take.
    """

    def __init__(self, index: int, count: int, directory: str) -> None:
        self.index, self.count, self.directory = index, count, directory
        self._outboxes: dict[int, asyncio.Queue[tuple[bytes, asyncio.Future[bool | None]]]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._in_flight: set[int] = set()  # owners whose sender has a batch written or being written
        self._peers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # connections from other workers
        self._server: asyncio.AbstractServer | None = None
        self._take: Take | None = None
        self._closing = False

    async def start(self, take: Take) -> None:
        """Listen for other workers' parts; `take(body)` is True once the part is taken (durable with a spool)."""
        self._take = take
        path = self._path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by this worker's previous life
        self._server = await asyncio.start_unix_server(self._peer, path=path)

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index}.sock")

    def owner(self, trace_id: int) -> int:
        return self.owner_of(trace_id.to_bytes(16, "big"))

    def owner_of(self, trace_id: bytes) -> int:
        """The worker owning a trace (16 bytes): a hash of every bit, since some generators fix bits
        (odd ids, a timestamp in the high ones)."""
        return zlib.crc32(trace_id) % self.count + 1

    def split(self, request: ExportTraceServiceRequest) -> Split:
        return split_request(request, self.owner_of)

    def send(self, owner: int, body: bytes) -> asyncio.Future[bool | None]:
        """Pass a part (an OTLP request of `owner`'s traces) on; resolves True once `owner` took it, False
        when the caller must take it itself, None when it was written to a live owner that did not answer
        in time (it may still take it). On the event loop."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool | None] = loop.create_future()
        if self._closing:
            answer.set_result(False)
            return answer
        outbox = self._outboxes.get(owner)
        if outbox is None:
            outbox = self._outboxes[owner] = asyncio.Queue()
        sender = self._senders.get(owner)
        if sender is None or sender.done():  # the first part for `owner`, or a sender a bug ended
            self._senders[owner] = loop.create_task(self._send_to(owner, outbox))
        outbox.put_nowait((body, answer))
        return answer

    async def _send_to(self, owner: int, outbox: asyncio.Queue[tuple[bytes, asyncio.Future[bool | None]]]) -> None:
        """Pass what waits for worker `owner` in one message, and settle each part with its answer."""
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        # Until close(), whose cancel may be lost: Python 3.11's wait_for swallows a cancellation that
        # comes as the awaited read ends (as when the peer closes its end while stopping too).
        while not self._closing:
            batch = [await outbox.get()]
            size = len(batch[0][0])
            while size < BATCH_BYTES and not outbox.empty():
                batch.append(outbox.get_nowait())
                size += len(batch[-1][0])
            taken: bool | None = False
            self._in_flight.add(owner)
            try:
                for _ in range(2):  # a connection to a peer's previous life fails once: reconnect
                    written = False
                    try:
                        if writer is None:
                            connecting = asyncio.open_unix_connection(self._path(owner))
                            reader, writer = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
                        writer.write(size.to_bytes(4, "big"))
                        writer.writelines([body for body, _ in batch])
                        written = True
                        await writer.drain()
                        assert reader is not None
                        taken = await asyncio.wait_for(reader.readexactly(1), ANSWER_TIMEOUT_S) == TAKEN
                        break
                    except (OSError, asyncio.IncompleteReadError) as error:  # TimeoutError is an OSError
                        if writer is not None:
                            writer.close()
                        reader = writer = None
                        if isinstance(error, TimeoutError):  # alive but slow: it has the part, not again
                            taken = None  # written, unanswered: the owner may take it yet (the caller decides)
                            break
                    except asyncio.CancelledError:
                        if written:  # cut short after the write (close() gave up waiting): the owner may have it
                            taken = None
                        raise
            finally:
                self._in_flight.discard(owner)
                for _, answer in batch:  # not taken (the owner is restarting or stopping): the sender's
                    if not answer.done():
                        answer.set_result(taken)
        if writer is not None:
            writer.close()

    async def _peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and self._take is not None
        self._peers[task] = writer
        try:
            while not self._closing:  # a connection accepted as close() ran ends here
                size = int.from_bytes(await reader.readexactly(4), "big")
                body = await reader.readexactly(size)  # a peer of the same user, in a 0700 directory
                taken = not self._closing and await self._take(body)
                writer.write(TAKEN if taken else NOT_TAKEN)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            del self._peers[task]
            writer.close()

    async def close(self) -> None:
        """Before the pipeline drains: parts waiting for a peer are answered "not taken" (their senders
        take them), and peers take back theirs."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        # End the peers' connections so their handlers return: left waiting, the loop's shutdown would
        # cancel them, and Python 3.11's asyncio logs a cancelled connection handler as a traceback.
        for writer in self._peers.values():
            writer.close()
        await asyncio.gather(*self._peers, return_exceptions=True)
        # A batch in flight gets its answer first (or times out: "written, unanswered"), so that a part the
        # owner may hold is not taken here too; a sender waiting for parts has none in flight.
        busy = [task for owner, task in self._senders.items() if owner in self._in_flight]
        if busy:
            await asyncio.wait(busy, timeout=ANSWER_TIMEOUT_S + CONNECT_TIMEOUT_S)
        for task in self._senders.values():
            task.cancel()  # a part not written is answered "not taken" (the `finally` above)
        await asyncio.gather(*self._senders.values(), return_exceptions=True)
        for outbox in self._outboxes.values():
            while not outbox.empty():
                _, answer = outbox.get_nowait()
                if not answer.done():
                    answer.set_result(False)
