"""Where conversation content is written: directories 0700 and databases 0600, whatever the umask.

The spool, the write-ahead log, the session book and the local API's database hold what users said.
Other users must not read them, and must not write where they live: a row planted in a spool is
uploaded with our token, a symlink in place of a database sends the content where its author chose.
So a directory another user owns, or that group or others may write, is refused (as ssh refuses such
a key file), and a database is opened without following a symlink and only if it is ours. SQLite
creates `-wal`, `-shm` and `-journal` with the database's mode, so a database created 0600 keeps
them 0600 too. Every directory and database of the package goes through this module.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")  # created by SQLite beside the database, with its mode
NOT_FILES = ("", ":memory:")  # SQLite's names of databases without a file


class NotPrivate(PermissionError):
    """A directory or file other users could write (or that is not what it seems): refused, never used."""


def private_directory(path: str | os.PathLike[str]) -> Path:
    """`path`, created 0700 (missing parents too) or checked: owned by this user, not writable by others."""
    path = Path(path)
    missing = []
    for directory in (path, *path.parents):
        if os.path.lexists(directory):
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIRECTORY_MODE)
            os.chmod(directory, DIRECTORY_MODE)  # the umask may have taken the owner's bits
        except FileExistsError:  # another process of ours made it first: checked below like any other
            pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the configured name may be a symlink
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    _check_owner(path, info, "directory")
    if info.st_mode & 0o022:
        raise NotPrivate(
            f"{path}: directory writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}), "
            f"refused; make it private: chmod 700 {path}"
        )
    return path


def private_database(path: str | os.PathLike[str], *, check_directory: bool = True) -> str:
    """`path` ready for `sqlite3.connect`: created 0600, or an existing regular file of ours made 0600.

    A symlink is refused, for the database and its companions. `check_directory=False` leaves the
    directory to its owner (the local API's `--db`, a file anywhere the developer chose).
    """
    name = os.fspath(path)
    if name in NOT_FILES:
        return name
    if check_directory:
        private_directory(os.path.dirname(os.path.abspath(name)))
    _private_file(name, create=True)
    for suffix in SQLITE_COMPANIONS:
        _private_file(name + suffix, create=False)
    return name


def _private_file(name: str, *, create: bool) -> None:
    """Create `name` 0600 (`create`), or make the existing file 0600 after checking it is ours."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not block us
    fd = None
    if create:
        with contextlib.suppress(FileExistsError):  # O_EXCL also fails on a symlink, dangling or not
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    if fd is None:
        try:
            fd = os.open(name, flags)
        except FileNotFoundError:
            if create:
                raise
            return
        except OSError:
            if os.path.islink(name):  # O_NOFOLLOW: ELOOP
                raise NotPrivate(f"{name}: a symbolic link, refused (the database must be a file of its own)") from None
            raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotPrivate(f"{name}: not a regular file, refused")
        _check_owner(name, info, "file")
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)  # created under a umask, or by an older version (0644)
    finally:
        os.close(fd)


def _check_owner(path: str | os.PathLike[str], info: os.stat_result, what: str) -> None:
    if info.st_uid != os.geteuid():
        raise NotPrivate(
            f"{path}: {what} owned by uid {info.st_uid}, not by this service's user (uid {os.geteuid()}), refused"
        )
