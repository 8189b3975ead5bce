"""The bounded queue between the receivers and the pipeline, as the Collector has between receiver and exporter.

The event loop reads a request, decodes it (a small body; a large one in the decode pool), writes it to
the write-ahead log (awaiting the log's writer thread), queues it here and answers. One thread takes
what is queued, in arrival order, and runs it through the pipeline: conversion, the session store's
reads and writes (SQLite, or Redis over the network), the spool's fsync. The same thread releases due
roots every `TICK_S`. A slow session store or disk then delays threads, never an answer or `/healthz`.

One thread, not a pool: a trace's spans may come in several requests, and the trace buffer, the
session store and the write-ahead log's pins see them in the order they were queued.

The bound counts spans (a request at least one). Past it the receivers answer 503 with `Retry-After`
(gRPC UNAVAILABLE). A request already written to the log, or a part another worker passed on, is
always queued: the bound is checked before anything is written, never after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

_logger = logging.getLogger(__name__)

TICK_S = 0.25  # due roots are released this often
MAX_QUEUED_SPANS = 100_000  # about the trace buffer's own bound: a burst waits here, not in the Collector

Job = Callable[[], object]


class Jobs(Protocol):
    """Where the intake hands work for the pipeline: `IntakeQueue` in the sidecar, `RunNow` elsewhere."""

    def full(self) -> bool: ...

    def put(self, job: Job, spans: int = 1) -> None: ...


class RunNow:
    """No queue: each job runs on the caller's thread, done when `put` returns (an intake driven by hand)."""

    def full(self) -> bool:
        return False

    def put(self, job: Job, spans: int = 1) -> None:
        job()


class IntakeQueue:
    """Jobs for the pipeline, run in order on one thread, with `tick` every `tick_s` in between."""

    def __init__(self, tick: Job, *, max_spans: int = MAX_QUEUED_SPANS, tick_s: float = TICK_S) -> None:
        self.max_spans = max_spans
        self._tick = tick
        self._tick_s = tick_s
        self._jobs: deque[tuple[Job, int]] = deque()
        self._spans = 0  # spans queued, the one running included
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="otel-context-intake", daemon=True)
        self._thread.start()

    def full(self) -> bool:
        """Whether the queue holds its bound of spans: new requests are pushed back (503)."""
        return self._spans >= self.max_spans

    def queued(self) -> int:
        """Spans queued or being converted."""
        return self._spans

    def put(self, job: Job, spans: int = 1) -> None:
        """Queue `job` (never refused: the caller checked `full()` before writing anything). After
        `close()`, the job runs on the caller's thread: what is taken is never dropped."""
        spans = max(1, spans)
        with self._cond:
            if not self._closing:
                self._jobs.append((job, spans))
                self._spans += spans
                self._cond.notify()
                return
        self._call(job)

    def close(self) -> None:
        """Run what is queued, then stop the thread (blocking: call it off the event loop)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_s
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    wait = next_tick - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                entry = self._jobs.popleft() if self._jobs else None
                if entry is None and self._closing:
                    return
            if entry is not None:
                job, spans = entry
                self._call(job)
                with self._cond:
                    self._spans -= spans
            if time.monotonic() >= next_tick:  # under a steady stream of requests too
                self._call(self._tick)
                next_tick = time.monotonic() + self._tick_s

    @staticmethod
    def _call(job: Job) -> None:
        try:
            job()
        except Exception:
            _logger.exception("otel-context serve: converting received spans failed")
