"""The delivery helper process's side of the pipe (its entry point is `otel_context.helper_process`).

It runs a `DeliveryQueue` (queue -> retry -> read-back -> timeout -> send, spool if configured) on the items the app
prepared, and says which ones are settled: delivered, refused for good, spooled, or given up and
counted. Settings come as the first frame on stdin (the token never shows in argv); frames leave on
the original stdout, which nothing else may write to, so fd 1 is pointed at stderr. When stdin closes
without a stop (the app died), it delivers or spools what it holds within the shutdown timeout, then exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from ..config import ExporterSettings
from ..counters import COUNTERS, Counters
from .base import Delivery
from .helper_wire import ACKS, DONE, HELLO, ITEMS, SETTINGS, STOP, FrameReader, json_frame, read_items, read_settings
from .item import QueueItem

ACK_WINDOW_S = 0.005  # acks settled within this window go back in one frame (fewer wake-ups in the app)
# (settings, counters, on_settled) -> the queue, calling `on_settled(item)` once an item is settled and
# counted, and how to stop it within a timeout (returning what was left)
OpenDelivery = Callable[
    [ExporterSettings, Counters, Callable[[QueueItem], None]], tuple[Delivery, Callable[[float], int]]
]
_GAUGES = {name for name, (_, is_gauge) in COUNTERS.items() if is_gauge}


class Helper:
    """Intake from the app, acks back: which app ids each queue item carries, until it is settled."""

    def __init__(self, settings: ExporterSettings, out_fd: int, open_delivery: OpenDelivery) -> None:
        self.out_fd = out_fd
        self.settings = settings
        self.counters = Counters()
        self._lock = threading.Condition()
        self._carried: dict[int, tuple[QueueItem, int]] = {}  # id(item) -> (item, the app id it settles)
        self._acks: list[int] = []
        self._sent: dict[str, int] = {}
        self._closing = False
        self._write_lock = threading.Lock()
        self.delivery, self._close = open_delivery(settings, self.counters, self._settled)
        self.spooled = self.delivery.spooled
        self._writer = threading.Thread(target=self._write_acks, name="otel-context-helper-acks", daemon=True)
        self._writer.start()

    def intake(self, batch: list[tuple[int, QueueItem]]) -> None:
        """Queue a batch; spooled items (on disk before this returns) and drops are settled at once."""
        if self.spooled:
            self.delivery.offer([item for _, item in batch], admitted=True)
            self._ack([app_id for app_id, _ in batch])
            return
        with self._lock:
            for app_id, item in batch:
                self._carried[id(item)] = (item, app_id)
        accepted = self.delivery.offer([item for _, item in batch], admitted=True)
        if not accepted:  # stopping: dropped and counted
            self._ack([app_id for app_id, _ in batch])

    def _settled(self, item: QueueItem) -> None:
        with self._lock:
            carried = self._carried.pop(id(item), None)
        if carried is not None:
            self._ack([carried[1]])

    def _ack(self, app_ids: list[int]) -> None:
        if app_ids:
            with self._lock:
                self._acks += app_ids
                self._lock.notify()

    def _counter_growth(self) -> dict[str, int]:
        now = self.counters.snapshot()
        growth = {k: v - self._sent.get(k, 0) for k, v in now.items() if k not in _GAUGES and v != self._sent.get(k, 0)}
        self._sent = {k: v for k, v in now.items() if k not in _GAUGES}
        return growth

    def _write_acks(self) -> None:
        while True:
            with self._lock:
                while not self._acks and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
            time.sleep(ACK_WINDOW_S)
            with self._lock:
                if self._closing:
                    return  # the DONE frame carries them
                acks, self._acks = self._acks, []
                message = json_frame(ACKS, {"acks": acks, "counters": self._counter_growth()})
            self.send(message)

    def send(self, data: bytes) -> None:
        with self._write_lock:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.out_fd, view) :]
            except OSError:
                pass  # the app is gone: what we hold is still delivered (or spooled) before we exit

    def stop(self, timeout_s: float) -> None:
        """Deliver within `timeout_s`, then report what was left: its count, its app ids, the last counters."""
        left = self._close(timeout_s)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._writer.join(timeout=1.0)
        with self._lock:
            unsettled = [app_id for _, app_id in self._carried.values()]
            done = {"left": left, "acks": self._acks, "unsettled": unsettled, "counters": self._counter_growth()}
            self._acks = []
        self.send(json_frame(DONE, done))


def _own_pipe_fds() -> tuple[int, int]:
    """The pipes on private fds; fd 0 reads nothing, fd 1 goes to stderr: a stray print cannot corrupt a frame."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return in_fd, out_fd


def serve(open_delivery: OpenDelivery) -> int:
    """The helper's main loop: settings, then items until a stop, or until stdin closes (the app died)."""
    in_fd, out_fd = _own_pipe_fds()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the app; its shutdown stops us
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("otel_context")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    reader = FrameReader()
    helper: Helper | None = None
    while True:
        data = os.read(in_fd, 1 << 20)
        if not data:  # the app died or closed us without a stop
            if helper is not None:
                helper.stop(helper.settings.shutdown_timeout_s)
            return 0
        for kind, payload in reader.feed(data):
            if kind == SETTINGS and helper is None:
                helper = Helper(read_settings(payload), out_fd, open_delivery)
                helper.send(json_frame(HELLO, {"pid": os.getpid()}))
            elif kind == ITEMS and helper is not None:
                helper.intake(read_items(payload))
            elif kind == STOP and helper is not None:
                helper.stop(max(0.0, float(json.loads(payload)["deadline"]) - time.monotonic()))  # one clock per host
                return 0
