"""Durable acknowledgement: with a spool, the sidecar acknowledges only requests its write-ahead log holds.

A request's record stays until every trace it has spans of is *finished*: the pipeline holds nothing
of it any more (the trace buffer, or runs waiting for a failing session book), so its threads were
submitted to the spool (durable) or dropped and counted (evicted, late, filtered). After a crash,
`replay` feeds what is left to the pipeline before the listeners open. Replays append nothing twice:
the buffer drops duplicate spans, the session book places a known turn where it was, and the spool
recognises a run it holds or delivered by its segment key (`delivery/spool.py`).

Under `serve --workers` with trace routing, a worker's log holds the spans of the traces it owns: its
part of each request it received, the parts other workers passed it (answered "taken" only once
logged), and parts it took because their owner could not. The log's records belong to the process
that wrote them (`owners.py`): a worker started in place of a killed one replays what that one held.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..model import SpanRecord
from ..pipeline import Pipeline
from ..spans.otlp import records_from_request
from .intake_queue import Jobs, RunNow
from .wal import WriteAheadLog

_logger = logging.getLogger(__name__)


class DurableIntake:
    """The pipeline behind a write-ahead log: which acknowledged requests still pin unfinished traces."""

    def __init__(
        self, pipeline: Pipeline, wal: WriteAheadLog, max_bytes: int | None = None, jobs: Jobs | None = None
    ) -> None:
        """`max_bytes` bounds the log (default: the spool's bound); beyond it the sidecar answers 503.
        `jobs`: where logged requests go to the pipeline (the sidecar's `IntakeQueue`; default: at once)."""
        self.pipeline = pipeline
        self.wal = wal
        self.jobs: Jobs = jobs if jobs is not None else RunNow()
        self.max_bytes = max_bytes if max_bytes is not None else pipeline.settings.spool_max_bytes
        self._pinned: dict[int, list[int]] = {}  # trace id -> seqs of the requests with its spans
        self._open: dict[int, int] = {}  # seq -> traces of it not finished yet
        self._sizes: dict[int, int] = {}  # seq -> bytes of the record
        self.size_bytes = 0
        # Pinning, accepting and settling happen under one lock: a trace must not be declared finished
        # between a request's pins and its spans reaching the buffer, or between a root leaving the
        # buffer and its thread reaching the spool.
        self._lock = threading.Lock()
        pipeline.counters.gauge("requests_logged", lambda: len(self._open))
        pipeline.counters.gauge("wal_commits", lambda: wal.commits)

    def full(self) -> bool:
        """Whether the log is at its bound (orphan traces pin their requests until evicted): push back."""
        return self.size_bytes >= self.max_bytes

    async def accept(
        self, request: ExportTraceServiceRequest, records: list[SpanRecord], *, body: bytes | None = None
    ) -> None:
        """Write the request ahead, then queue its spans for the pipeline; returns once it is on disk
        (its record stays, pinned, until its traces are finished: a crash before they are replays them).

        `body`: the request serialized, when the caller has it (a part another worker passed on).
        """
        traces = {record.trace_id for record in records}
        if not traces:
            return
        if body is None:
            body = request.SerializeToString()
        # Shielded: a request written to the log is also accepted, even if its client hangs up meanwhile.
        await asyncio.shield(self._log_and_accept(body, traces, records))

    async def _log_and_accept(self, body: bytes, traces: set[int], records: list[SpanRecord]) -> None:
        seq = await self.wal.append(body, traces)
        self.jobs.put(lambda: self._accept(seq, traces, records, len(body)), len(records))

    def tick(self) -> None:
        """Release due roots, then forget the traces that left the buffer (built, or evicted)."""
        with self._lock:
            self.pipeline.tick()
            self._settle(list(self._pinned))

    def replay(self) -> int:
        """Feed the records a crash left to the pipeline (only their unfinished traces); the number replayed."""
        records = self.wal.records()
        for seq, body, pinned in records:
            if not pinned:  # cannot happen (the last pin goes with its record), but must not leak
                self.wal.release([], [seq])
                continue
            try:
                spans, _ = records_from_request(ExportTraceServiceRequest.FromString(body))
            except Exception:  # written by this code after validation: only a bug or a damaged disk lands here
                _logger.exception("otel-context serve: write-ahead record %d cannot be read; dropped", seq)
                self.wal.release([], [seq])
                continue
            self._accept(seq, pinned, [span for span in spans if span.trace_id in pinned], len(body))
        if records:
            self.pipeline.counters.add("requests_replayed", len(records))
            _logger.info("otel-context serve: replayed %d acknowledged request(s) left by a crash", len(records))
        return len(records)

    def shutdown(self, timeout_s: float) -> int:
        """The pipeline's shutdown (roots built, threads spooled), then the log's records of finished traces."""
        with self._lock:
            left = self.pipeline.shutdown(timeout_s)
            self._settle(list(self._pinned))
        self.wal.close()
        return left

    def _accept(self, seq: int, traces: Iterable[int], records: list[SpanRecord], size: int) -> None:
        traces = list(traces)
        with self._lock:
            for trace in traces:
                self._pinned.setdefault(trace, []).append(seq)
            self._open[seq] = self._open.get(seq, 0) + len(traces)
            self._sizes[seq] = size
            self.size_bytes += size
            try:
                self.pipeline.accept(records)
            finally:
                self._settle(traces)

    def _settle(self, traces: Iterable[int]) -> None:
        """Release the pins of finished traces; delete the records left without any."""
        pins: list[tuple[int, int]] = []
        emptied: list[int] = []
        for trace in traces:
            if trace not in self._pinned or self.pipeline.holds(trace):
                continue
            for seq in self._pinned.pop(trace):
                pins.append((seq, trace))
                self._open[seq] -= 1
                if not self._open[seq]:
                    del self._open[seq]
                    self.size_bytes -= self._sizes.pop(seq)
                    emptied.append(seq)
        self.wal.release(pins, emptied)
