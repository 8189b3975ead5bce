"""The sidecar's write-ahead log, in process: appends made at the same moment share one fsync."""

from __future__ import annotations

import asyncio

from otel_context.receiver.wal import WriteAheadLog

from ..support.wal import logged


def test_concurrent_appends_share_one_fsync(tmp_path):
    wal = WriteAheadLog(tmp_path)

    async def append_many() -> list[int]:
        return await asyncio.gather(*(wal.append(b"request %d" % n, {n}) for n in range(50)))

    seqs = asyncio.run(append_many())
    assert sorted(seqs) == list(range(1, 51))
    assert wal.commits <= 5, f"{wal.commits} commits for 50 concurrent appends: no group commit"
    wal.release([(seq, n) for n, seq in enumerate(seqs)], seqs)
    wal.close()
    assert logged(tmp_path) == []
