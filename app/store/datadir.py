"""The gateway's data directory: kept private (0700, files 0600), and what a full disk under it means.

Everything the gateway keeps (the job database with its `-wal`/`-shm` files and lock, tokens, run-time remotes and
their keys, upload spools) lives there, and exec output is in the job database: no other local user may read it.
A write that fails because the device is full (SQLite's `database or disk is full`, `ENOSPC`, `EDQUOT`) becomes
`StorageFull`, which the API answers with 507 `storage-full` naming the directory.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
MIN_FREE_BYTES = 1 << 20
"""Below this much free space on its device the data directory counts as full."""

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFull(Exception):
    """A write to the data directory failed because its device (or quota) is full."""

    def __init__(self, directory: Path, reason: str) -> None:
        super().__init__(f"the gateway's data directory {directory} is full ({reason}): free space on its device; "
                         "writes are refused until then, reads still answer")
        self.directory = directory
        self.reason = reason


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc` is a write refused for lack of space (SQLite or the OS)."""
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def secure_data_dir(directory: Path) -> None:
    """Create `directory` (0700) or make an existing one private: itself and its subdirectories 0700, every file
    0600. Raises OSError when it cannot."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)
    for root, dirs, files in os.walk(directory):
        for d in dirs:
            path = os.path.join(root, d)
            if not os.path.islink(path):
                os.chmod(path, DIR_MODE)
        for f in files:
            path = os.path.join(root, f)
            if not os.path.islink(path):
                os.chmod(path, FILE_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists; make it 0600 either way."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)
