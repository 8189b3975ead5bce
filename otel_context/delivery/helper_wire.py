"""The pipe between the app and its delivery helper process: length-prefixed frames, one kind byte each.

App -> helper: SETTINGS (JSON, always first: the token travels here, never in argv or the environment),
ITEMS (a batch of queue items, binary), STOP (JSON: how long to keep delivering).
Helper -> app: HELLO (JSON: pid), ACKS (JSON: app ids settled and the counters' growth since the last
frame), DONE (JSON: the stop's outcome: what was left, with the last counters).
"""

from __future__ import annotations

import json
import struct
from dataclasses import fields
from typing import Any

from ..config import ExporterSettings
from .item import ItemKind, QueueItem

SETTINGS, ITEMS, STOP, HELLO, ACKS, DONE = b"S", b"I", b"X", b"H", b"A", b"D"
_HEADER = struct.Struct(">IB")  # length of kind + payload, kind
_ITEM = struct.Struct(">QBBIII")  # app id, kind, unconfirmed, thread id, segment and body lengths
_KINDS = (ItemKind.THREAD, ItemKind.RATING)
# What the helper does not need (conversion and redaction stay in the app) or cannot be sent (a callable).
_APP_ONLY = ("redact", "redact_hook", "pseudonymize", "pseudonym_key", "eval_ratings")


def frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload) + 1, kind[0]) + payload


def json_frame(kind: bytes, value: object) -> bytes:
    return frame(kind, json.dumps(value, separators=(",", ":")).encode())


def items_frame(items: list[tuple[int, QueueItem]]) -> bytes:
    parts = []
    for app_id, item in items:
        tid, segment = item.thread_id.encode(), item.segment.encode()
        head = _ITEM.pack(app_id, _KINDS.index(item.kind), item.unconfirmed, len(tid), len(segment), len(item.body))
        parts += (head, tid, segment, item.body)
    return frame(ITEMS, b"".join(parts))


def read_items(payload: bytes) -> list[tuple[int, QueueItem]]:
    out = []
    at = 0
    while at < len(payload):
        app_id, kind, unconfirmed, tid_len, segment_len, body_len = _ITEM.unpack_from(payload, at)
        at += _ITEM.size
        tid = payload[at : at + tid_len].decode()
        at += tid_len
        segment = payload[at : at + segment_len].decode()
        at += segment_len
        body = payload[at : at + body_len]
        out.append((app_id, QueueItem(tid, body, _KINDS[kind], segment=segment, unconfirmed=bool(unconfirmed))))
        at += body_len
    return out


def settings_frame(settings: ExporterSettings) -> bytes:
    values = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in _APP_ONLY}
    values["delivery"] = "thread"  # the helper delivers on its own workers
    return json_frame(SETTINGS, values)


def read_settings(payload: bytes) -> ExporterSettings:
    values: dict[str, Any] = json.loads(payload)
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return ExporterSettings(**values)


class FrameReader:
    """Splits a byte stream into (kind, payload) frames, whatever the reads' boundaries."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buffer += data
        out = []
        while len(self._buffer) >= _HEADER.size:
            length, kind = _HEADER.unpack_from(self._buffer)
            end = 4 + length
            if len(self._buffer) < end:
                break
            out.append((bytes((kind,)), bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return out
