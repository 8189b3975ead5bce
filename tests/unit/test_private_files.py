"""`private_files`: directories 0700 and databases 0600 whatever the umask; what is not ours is refused.

In process, on real files; `tests/e2e/test_private_state.py` runs the services themselves.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_context.private_files import NotPrivate, private_database, private_directory
from otel_context.shared_sqlite import connect_shared

from ..support.second_user import OTHER_UID, need_root


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])  # 0o277 would even take the owner's write bit
def test_created_private_whatever_the_umask(tmp_path, mask):
    with umask(mask):
        db = connect_shared(tmp_path / "a" / "b" / "book.db")  # the spool, log and session book's way in
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b")] == [0o700, 0o700]
    files = sorted((tmp_path / "a" / "b").iterdir())
    assert [p.name for p in files] == ["book.db", "book.db-shm", "book.db-wal"]  # SQLite's, with the db's mode
    assert [mode(p) for p in files] == [0o600] * 3
    db.close()


def test_files_left_open_by_an_older_version_are_closed(tmp_path):
    db = tmp_path / "sessions.db"
    sqlite3.connect(db).close()
    for path in (db, tmp_path / "sessions.db-wal"):
        path.touch()
        path.chmod(0o644)
    tmp_path.chmod(0o755)  # a directory of ours that others may read but not write is kept as it is
    private_database(db)
    assert [mode(db), mode(tmp_path / "sessions.db-wal"), mode(tmp_path)] == [0o600, 0o600, 0o755]


@pytest.mark.parametrize("directory_mode", [0o777, 0o770, 0o702])
def test_a_directory_others_may_write_is_refused(tmp_path, directory_mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(directory_mode)
    with pytest.raises(NotPrivate, match=f"writable by group or others \\(mode 0{directory_mode:o}\\)"):
        private_directory(shared)
    with pytest.raises(NotPrivate):
        private_database(shared / "spool.db")
    assert list(shared.iterdir()) == []  # refused before anything is created in it


@pytest.mark.parametrize("target", ["missing", "existing"])
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_a_symlink_is_never_followed(tmp_path, target, suffix):
    elsewhere = tmp_path / "elsewhere.db"
    if target == "existing":
        elsewhere.write_bytes(b"theirs")
        elsewhere.chmod(0o644)
    (tmp_path / f"spool.db{suffix}").symlink_to(elsewhere)
    with pytest.raises(NotPrivate, match="a symbolic link"):
        private_database(tmp_path / "spool.db")
    if target == "existing":
        assert (elsewhere.read_bytes(), mode(elsewhere)) == (b"theirs", 0o644)  # neither written nor changed
    else:
        assert not elsewhere.exists()  # not created where the link points


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "spool.db")
    with pytest.raises(NotPrivate, match="not a regular file"):
        private_database(tmp_path / "spool.db")


def test_what_another_user_owns_is_refused(tmp_path):
    need_root()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(NotPrivate, match=f"directory owned by uid {OTHER_UID}, not by this service's user"):
        private_directory(theirs)
    planted = tmp_path / "spool.db"
    planted.touch(mode=0o600)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(NotPrivate, match=f"file owned by uid {OTHER_UID}"):
        private_database(planted)


def test_in_memory_databases_are_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert private_database(":memory:", check_directory=False) == ":memory:"
    assert list(tmp_path.iterdir()) == []
