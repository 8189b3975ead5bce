"""What a write-ahead log on disk still holds, read by a log of its own (as a restarted sidecar reads it)."""

from __future__ import annotations

from pathlib import Path

from otel_context.receiver.wal import WriteAheadLog


def logged(directory: Path) -> list[set[int]]:
    """The traces each record in a write-ahead log still pins."""
    wal = WriteAheadLog(directory)
    try:
        return [pinned for _, _, pinned in wal.records()]
    finally:
        wal.close()
