"""`serve --workers`: every span goes to the worker that owns its trace, so a trace is assembled in one process."""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import io
import logging
import os
import pickle
import types
import zlib
from collections.abc import Iterable

from ..model import SpanRecord
from ..pipeline import Pipeline

_logger = logging.getLogger(__name__)


class TraceRouter:
    """In a worker of `serve --workers`: every span goes to the worker that owns its trace.

    The kernel hands connections, not traces, to workers, and a Collector may send a trace's spans
    in two requests over two connections. Each trace id has one owning worker (a hash); spans of
    traces owned by another worker are passed to it over a Unix socket (in a private directory of the
    supervisor), on the event loop (threads would fight the loop for the GIL), so a trace is
    assembled whole. A peer that cannot take them (restarting, stopping) gets nothing: they are
    assembled here instead, never lost. Like the buffer itself, spans on their way to a peer live in
    memory until the sidecar's write-ahead log.
    """

    def __init__(self, pipeline: Pipeline, index: int, count: int, directory: str) -> None:
        self.pipeline, self.index, self.count, self.directory = pipeline, index, count, directory
        self._accept_here = pipeline.accept
        pipeline.accept = self.accept  # type: ignore[method-assign]
        self._loop = asyncio.get_running_loop()
        self._outboxes: dict[int, asyncio.Queue[list[SpanRecord]]] = {}
        self._senders: list[asyncio.Task[None]] = []
        self._peers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # connections from other workers
        self._server: asyncio.AbstractServer | None = None
        self._closing = False

    async def start(self) -> None:
        path = self._path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by this worker's previous life
        self._server = await asyncio.start_unix_server(self._peer, path=path)

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index}.sock")

    def owner(self, trace_id: int) -> int:
        # a hash of every bit: some generators fix bits (odd ids, a timestamp in the high ones)
        return zlib.crc32(trace_id.to_bytes(16, "big")) % self.count + 1

    def accept(self, records: Iterable[SpanRecord], **kwargs: object) -> bool:
        """The pipeline's `accept`: spans of this worker's traces here, the others queued for their owners."""
        mine: list[SpanRecord] = []
        theirs: dict[int, list[SpanRecord]] = {}
        for record in records:
            owner = self.owner(record.trace_id)
            (mine if owner == self.index else theirs.setdefault(owner, [])).append(record)
        for owner, batch in theirs.items():
            if self._closing:
                mine += batch
            else:
                self._loop.call_soon_threadsafe(self._enqueue, owner, batch)
        return self._accept_here(mine, **kwargs) if mine else True  # type: ignore[arg-type]

    def _enqueue(self, owner: int, batch: list[SpanRecord]) -> None:
        if self._closing:  # scheduled before close() began: kept here, like what close() finds waiting
            self._keep(batch, owner)
            return
        outbox = self._outboxes.get(owner)
        if outbox is None:
            outbox = self._outboxes[owner] = asyncio.Queue()
            self._senders.append(self._loop.create_task(self._send_to(owner, outbox)))
        outbox.put_nowait(batch)

    async def _send_to(self, owner: int, outbox: asyncio.Queue[list[SpanRecord]]) -> None:
        """Hand what waits to worker `owner`, in one message; what it cannot take is assembled here."""
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        # Until close(), whose cancel may be lost: Python 3.11's wait_for swallows a cancellation that
        # comes as the awaited read ends (as when the peer closes its end while stopping too).
        while not self._closing:
            batch = await outbox.get()
            while not outbox.empty():
                batch += outbox.get_nowait()
            taken = False
            try:
                for _ in range(2):  # a connection to a peer's previous life fails once: reconnect
                    try:
                        if writer is None:
                            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self._path(owner)), 5)
                        payload = _dumps(batch)
                        writer.write(len(payload).to_bytes(4, "big") + payload)
                        await writer.drain()
                        assert reader is not None
                        taken = await asyncio.wait_for(reader.readexactly(1), 10) == b"1"
                        break
                    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                        if writer is not None:
                            writer.close()
                        reader = writer = None
            finally:
                if not taken:  # the owner is restarting or stopping: assembled here rather than lost
                    self._keep(batch, owner)

    def _keep(self, batch: list[SpanRecord], owner: int) -> None:
        try:
            self._accept_here(batch)
        except Exception:
            _logger.exception("otel-context serve: spans for worker %d could not be kept", owner)

    async def _peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._peers[task] = writer
        try:
            while not self._closing:  # a connection accepted as close() ran ends here
                size = int.from_bytes(await reader.readexactly(4), "big")
                batch = pickle.loads(await reader.readexactly(size))  # a peer of the same user, in a 0700 dir
                answer = b"0"  # not taken: the sender keeps the spans itself
                if not self._closing:
                    try:
                        self._accept_here(batch)
                        answer = b"1"
                    except Exception:
                        _logger.exception("otel-context serve: spans from another worker could not be taken")
                writer.write(answer)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            del self._peers[task]
            writer.close()

    async def close(self) -> None:
        """Before the pipeline drains: what waits for a peer is assembled here, and peers keep theirs."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        # End the peers' connections so their handlers return: left waiting, the loop's shutdown would
        # cancel them, and Python 3.11's asyncio logs a cancelled connection handler as a traceback.
        for writer in self._peers.values():
            writer.close()
        await asyncio.gather(*self._peers, return_exceptions=True)
        for task in self._senders:
            task.cancel()  # an unacknowledged batch in flight is kept here (the `finally` above)
        await asyncio.gather(*self._senders, return_exceptions=True)
        for owner, outbox in self._outboxes.items():
            while not outbox.empty():
                self._keep(outbox.get_nowait(), owner)


def _frozen(values: dict) -> types.MappingProxyType:
    return types.MappingProxyType(values)


def _dumps(records: list[SpanRecord]) -> bytes:
    """Span records as bytes for a peer (their attribute maps are read-only proxies, which pickle refuses)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, types.MappingProxyType: lambda m: (_frozen, (dict(m),))}
    pickler.dump(records)
    return buffer.getvalue()
