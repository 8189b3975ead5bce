"""Which live process owns rows of a shared SQLite file (the spool, the sidecar's write-ahead log).

Several processes may share one directory (gunicorn workers, a forked child, `serve --workers`): each
owns the rows it wrote, under a token whose lock file it holds with `flock` for as long as it lives. A
lock that can be taken belongs to a dead process (kill -9 included: the kernel drops the lock), and its
rows are claimed by whoever takes it: nothing waits for a restart of the very process that died, and
no row is ever handled by two live processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from .private_files import FILE_MODE, private_directory


class OwnerLock:
    """This process's token in `directory`, its lock held until the process ends (or `release`)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = private_directory(directory)
        self.token = secrets.token_hex(8)
        self.path = self.directory / f"{self.token}.lock"
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # held until this process ends, however it ends

    def claim_dead(self, take: Callable[[str], int]) -> int:
        """`take(owner)` the rows of each owner whose process is gone, then forget that owner; how many taken."""
        taken = 0
        for lock_file in Path(self.directory).glob("*.lock"):
            owner = lock_file.stem
            if owner == self.token:
                continue
            try:
                fd = os.open(lock_file, os.O_RDWR | os.O_NOFOLLOW)
            except (FileNotFoundError, OSError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # alive: its owner holds the lock
                continue
            try:
                taken += take(owner)
                with contextlib.suppress(FileNotFoundError):
                    lock_file.unlink()
            finally:
                os.close(fd)
        return taken

    def release(self, *, keep_file: bool) -> None:
        """Let go (a clean close); `keep_file` while rows remain, so the next start or another process claims them."""
        if not keep_file:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)
