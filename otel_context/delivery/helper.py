"""Delivery in a helper process (`OTEL_EXPORTER_CONTEXT_DELIVERY=process`): the app only hands prepared items over.

Why: uploads cost the app's process CPU and GIL hand-offs (2-3 per upload); here the app pays one pipe
write per batch and one wake-up per batch of acks. The helper (`helper_main`) runs the same
`DeliveryQueue`, with the same settings, retries, spool and counters.

Nothing handed over is lost: the app keeps each item until the helper says it is settled (delivered,
refused for good, spooled, or given up and counted). A helper that dies is started again (with a
backoff) and gets every unsettled item again, in order (an upload is idempotent by thread id). One
app-side thread (`otel-context-helper`) starts the helper, writes to it and reads its acks. The helper
starts on first use, never at import; a forked child (gunicorn `--preload`) leaves the parent's helper
alone and starts its own on its first export. A helper that cannot be started makes delivery fall back
to workers in this process, with one warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..config import TOKEN_VARIABLES, ExporterSettings
from ..counters import Counters
from ..environment_variables import OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY
from ..model import ConversationThread
from .helper_wire import ACKS, DONE, HELLO, STOP, FrameReader, items_frame, json_frame, settings_frame
from .item import ItemKind, QueueItem, rating_item, thread_items
from .workers import DeliveryQueue, count_drops

_logger = logging.getLogger(__name__)
HELPER_MODULE = "otel_context.helper_process"  # an entry point: it wires the pipeline's sending
KILL_GRACE_S = 1.0  # after a shutdown's deadline: how long the helper gets to report before it is killed
HELLO_TIMEOUT_S = 30.0  # a helper that never says hello is killed and counts as a failed start
FAILED_STARTS = 3  # helpers that die before their hello, in a row, before uploads fall back to this process
MAX_BACKOFF_S = 5.0


class HelperDelivery:
    """`Delivery` served by a helper process (or, if none can run, by a `DeliveryQueue` here)."""

    def __init__(
        self, settings: ExporterSettings, counters: Counters, *, fallback: Callable[[], DeliveryQueue]
    ) -> None:
        """`fallback()` builds the in-process queue used if no helper can run."""
        self.settings = settings
        self.counters = counters
        self._make_fallback = fallback
        self.fallback: DeliveryQueue | None = None
        self._reset_state()
        counters.gauge("threads_queued", self.pending)
        if settings.spool_dir:
            self._ensure_started()  # replay what an earlier run left in the spool, as the thread mode does

    def _reset_state(self) -> None:
        self._cond = threading.Condition()
        self._unsettled: dict[int, QueueItem] = {}  # app id -> item, in the order handed over
        self._next_id = 0
        self._outbox: list[bytes] = []  # frames for the running helper
        self._pump: threading.Thread | None = None
        self._pump_ended = False
        self._wake_r = self._wake_w = -1
        self._woken = False
        self._child: _Child | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        self._done = False  # the pump must end now (killing the helper if it still runs)
        self._report: dict[str, Any] | None = None  # the helper's answer to a stop
        self._logged: set[str] = set()
        self.helper_pid: int | None = None
        self.restarts = 0

    @property
    def spooled(self) -> bool:
        """Whether a spool is configured (the helper owns it, or the fallback queue)."""
        return self.fallback.spooled if self.fallback is not None else bool(self.settings.spool_dir)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's helper and items stay the parent's; ours starts on first use."""
        if self.fallback is not None:
            self.fallback.reset_after_fork()
            return
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._child is not None:
            self._child.close()  # our copies of the pipes: the parent's helper must still see the parent's EOF
        self._reset_state()

    # -- producer side ----------------------------------------------------------------------------
    def submit(self, threads: Iterable[ConversationThread], *, admitted: bool = False) -> int:
        """As `DeliveryQueue.submit`."""
        fallback = self.fallback
        if fallback is not None:
            return fallback.submit(threads, admitted=admitted)
        return self.offer(thread_items(threads), admitted=admitted)

    def submit_rating(self, thread_id: str, index: int, rating: int) -> None:
        fallback = self.fallback
        if fallback is not None:
            fallback.submit_rating(thread_id, index, rating)
            return
        self.offer([rating_item(thread_id, index, rating)], admitted=True)

    def offer(self, items: list[QueueItem], *, admitted: bool) -> int:
        """Hand items to the helper (kept here until it says they are settled); how many were accepted."""
        if not items:
            return 0
        with self._cond:
            fallback = self.fallback
            if fallback is None:
                if self._stopping:
                    keep: list[QueueItem] = []
                else:
                    room = len(items) if admitted else max(0, self.settings.queue_size - len(self._unsettled))
                    keep = items[:room]
                batch = []
                for item in keep:
                    batch.append((self._next_id, item))
                    self._unsettled[self._next_id] = item
                    self._next_id += 1
                if batch:
                    self._outbox.append(items_frame(batch))
        if fallback is not None:
            return fallback.offer(items, admitted=admitted)
        if len(keep) < len(items):
            why = "the exporter is shut down" if self._stopping else "the delivery queue is full"
            count_drops(self.counters, self._logged, len(items) - len(keep), why, _logger)
        if keep:
            self._ensure_started()
            self._wake()
        return len(keep)

    def backlog_full(self, coming: int = 0) -> bool:
        if self.fallback is not None:
            return self.fallback.backlog_full(coming)
        return self.pending() + coming >= 0.9 * self.settings.queue_size

    def pending(self) -> int:
        """Threads handed over and not settled yet (with a spool: not spooled yet)."""
        if self.fallback is not None:
            return self.fallback.pending()
        return len(self._unsettled)

    # -- waiting ----------------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        return self.flush_until(time.monotonic() + timeout_s)

    def flush_until(self, deadline: float) -> bool:
        """Wait until every item handed over so far is settled (with a spool: spooled), or `deadline` passes.

        Acks, a fallback and the pump's end notify `_cond`; the predicate is checked under it."""
        with self._cond:
            last = self._next_id - 1

            def settled() -> bool:
                first = next(iter(self._unsettled), None)
                return first is None or first > last

            if not self._cond.wait_for(
                lambda: self.fallback is not None or settled(), timeout=max(0.0, deadline - time.monotonic())
            ):
                return False
            fallback = self.fallback
            if fallback is None:
                return True
        return fallback.flush_until(deadline)

    # -- lifecycle --------------------------------------------------------------------------------
    def shutdown(self, timeout_s: float) -> int:
        """The helper delivers within `timeout_s` and says what was left; killed if it has not by then (+ grace)."""
        if self.fallback is not None:
            return self.fallback.shutdown(timeout_s)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._stopping = True
            self._stop_deadline = deadline
            pump = self._pump
            if pump is None:
                return 0  # never started: nothing was handed over
            self._outbox.append(json_frame(STOP, {"deadline": deadline}))
        self._wake()
        try:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._report is not None or self.fallback is not None or self._pump_ended,
                    timeout=timeout_s + KILL_GRACE_S,
                )
        finally:
            with self._cond:
                self._done = True
            self._wake()
            pump.join(timeout=KILL_GRACE_S)
        if self.fallback is not None and self._report is None:
            return self.fallback.shutdown(max(0.0, deadline - time.monotonic()))
        with self._cond:
            lost = sum(1 for item in self._unsettled.values() if item.kind is ItemKind.THREAD)
            self._unsettled.clear()
            left = int(self._report["left"]) if self._report is not None else 0
        self.counters.add("threads_dropped", lost)  # never reached a helper that could report them
        return left + lost

    def _ensure_started(self) -> None:
        with self._cond:
            if self._pump is not None or self.fallback is not None:
                return
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._pump = threading.Thread(target=self._run, name="otel-context-helper", daemon=True)
            self._pump.start()

    def _wake(self) -> None:
        with self._cond:
            if self._woken or self._wake_w < 0:
                return
            self._woken = True
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    # -- the pump: one thread owns the helper, its pipes and its restarts -------------------------
    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        child: _Child | None = None
        failures, next_start, ever_ready = 0, 0.0, False
        try:
            while True:
                with self._cond:
                    if self._done or (child is None and self._report is not None):
                        return
                now = time.monotonic()
                if child is None and now >= next_start:
                    try:
                        child = self._start_child(selector)
                    except Exception as error:  # a sandbox without subprocesses, no interpreter to run
                        self._fall_back(f"cannot be started ({error})")
                        return
                if child is not None:
                    with self._cond:
                        for data in self._outbox:
                            child.wbuf += data
                        self._outbox.clear()
                    child.want_write(selector, bool(child.wbuf))
                timeout = max(0.0, next_start - now) if child is None else 1.0
                for key, _ in selector.select(timeout):
                    if key.data == "wake":
                        with self._cond:
                            self._woken = False
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                    elif child is not None and key.data == "write":
                        child.write()
                    elif child is not None and key.data == "read":
                        self._handle(child, child.read())
                if child is None:
                    continue
                if child.hello is False and time.monotonic() - child.started > HELLO_TIMEOUT_S:
                    child.kill()
                if not child.eof:
                    continue
                code = child.end(selector)
                with self._cond:
                    self._child = None
                    if self._report is not None:
                        return  # stopped as asked
                ever_ready = ever_ready or child.hello
                failures = 0 if child.hello else failures + 1
                if not ever_ready and failures >= FAILED_STARTS:
                    self._fall_back(f"exited before it was ready {failures} times (exit status {code})")
                    return
                self.restarts += 1
                next_start = time.monotonic() + min(MAX_BACKOFF_S, 0.1 * 2**failures)
                child = None
                _logger.warning(
                    "otel-context: the delivery helper (pid %s) exited (status %s); starting it again and "
                    "handing it the %d item(s) it had not settled",
                    self.helper_pid,
                    code,
                    self.pending(),
                )
        finally:
            if child is not None:
                child.kill()
                child.end(selector)
            selector.close()
            with self._cond:
                self._pump_ended = True
                self._child = None
                for fd in (self._wake_r, self._wake_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._wake_r = self._wake_w = -1
                self._cond.notify_all()

    def _start_child(self, selector: selectors.BaseSelector) -> _Child:
        child = _Child.spawn()
        selector.register(child.out_fd, selectors.EVENT_READ, "read")
        with self._cond:
            self._child = child
            self.helper_pid = child.proc.pid
            self._outbox.clear()  # everything unsettled goes again, in order, after the settings
            child.wbuf += settings_frame(self.settings)
            if self._unsettled:
                child.wbuf += items_frame(list(self._unsettled.items()))
            if self._stopping:
                child.wbuf += json_frame(STOP, {"deadline": self._stop_deadline})
        return child

    def _handle(self, child: _Child, frames: list[tuple[bytes, bytes]]) -> None:
        for kind, payload in frames:
            if kind == HELLO:
                child.hello = True
                continue
            message = json.loads(payload)
            if kind not in (ACKS, DONE):
                continue
            with self._cond:
                for name, amount in message["counters"].items():
                    self.counters.add(name, amount)
                for app_id in message["acks"]:
                    self._unsettled.pop(app_id, None)
                if kind == DONE:
                    for app_id in message["unsettled"]:  # counted (or kept in the spool) by the helper
                        self._unsettled.pop(app_id, None)
                    self._report = message
                self._cond.notify_all()

    def _fall_back(self, why: str) -> None:
        """Uploads run in this process from now on; what the helper had not settled goes to the local queue."""
        queue = self._make_fallback()
        with self._cond:
            items = list(self._unsettled.values())
            self._unsettled.clear()
            self.fallback = queue
            self._cond.notify_all()
        _logger.warning("otel-context: the delivery helper process %s; uploads run in the app's process instead", why)
        for item in items:
            item.unconfirmed = True  # the helper may have sent it before it died: read back first
        if items:
            queue.offer(items, admitted=True)


class _Child:
    """One helper process and the app's ends of its pipes (non-blocking, used by the pump thread only)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.in_fd, self.out_fd = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(self.in_fd, False)
        self.reader = FrameReader()
        self.wbuf = bytearray()
        self.hello = False
        self.eof = False
        self.writing = False
        self.started = time.monotonic()

    @classmethod
    def spawn(cls) -> _Child:
        if not sys.executable:
            raise OSError("sys.executable is unknown")
        proc = subprocess.Popen(
            [sys.executable, "-m", HELPER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_helper_environment(),
            close_fds=True,
            bufsize=0,
        )
        return cls(proc)

    def want_write(self, selector: selectors.BaseSelector, wanted: bool) -> None:
        if wanted and not self.writing and not self.eof:
            selector.register(self.in_fd, selectors.EVENT_WRITE, "write")
            self.writing = True
        elif not wanted and self.writing:
            selector.unregister(self.in_fd)
            self.writing = False

    def write(self) -> None:
        try:
            del self.wbuf[: os.write(self.in_fd, self.wbuf)]
        except BlockingIOError:
            pass
        except OSError:  # the helper is gone: its stdout's EOF comes next
            self.wbuf.clear()

    def read(self) -> list[tuple[bytes, bytes]]:
        try:
            data = os.read(self.out_fd, 1 << 20)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return []
        return self.reader.feed(data)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def end(self, selector: selectors.BaseSelector) -> int | None:
        """Unregister, close our ends, reap; the exit status."""
        for fd in (self.in_fd, self.out_fd):
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(fd)
        self.close()
        try:
            return self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(timeout=KILL_GRACE_S)

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]


def _helper_environment() -> dict[str, str]:
    """The app's environment, less the secrets (they come as the settings frame) and any tracing of the helper."""
    env = dict(os.environ)
    for name in (*TOKEN_VARIABLES, OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY):
        env.pop(name, None)
    env.update(
        OTEL_SDK_DISABLED="true", OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none"
    )
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and "auto_instrumentation" not in p]
    env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    return env
