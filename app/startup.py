"""Checks before the gateway serves: the data directory is usable and private, the job database (the SQLite file,
or the PostgreSQL server `LXDGW_DATABASE_URL` names, whose schema is brought up to date here) opens, reads and
writes. A known failure becomes a `StartupError` whose message names the file and what to do; `python -m app`
prints it as one line and exits non-zero (no traceback).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from app.settings import Settings
from app.store.database import describe
from app.store.datadir import MIN_FREE_BYTES, StorageFull, free_bytes, is_storage_full, secure_data_dir
from app.store.errors import StoreUnavailable
from app.store.jobs import SQLiteJobStore, StoreLocked

_CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class StartupError(Exception):
    """The gateway cannot start; the message says why and what to do."""


def _full(directory: Path, db: Path, reason: str) -> StartupError:
    return StartupError(f"the data directory {directory} is full ({reason}): the job database {db} cannot be "
                        "written; free space on its device and start again")


def check_data_dir(settings: Settings) -> None:
    """Make the data directory private and check that the job database opens, reads and writes."""
    directory = settings.data_dir
    kind, target = settings.job_database
    db = Path(target)
    try:
        secure_data_dir(directory)
    except OSError as exc:
        if is_storage_full(exc):
            raise _full(directory, db, exc.strerror or str(exc)) from None
        raise StartupError(f"cannot use the data directory {directory}: {exc.strerror or exc}; make it a directory "
                           "the gateway's user owns and can write (LXDGW_DATA_DIR)") from None
    if kind == "postgresql":
        check_shared_database(settings)
        return
    if free_bytes(directory) < MIN_FREE_BYTES:
        raise _full(directory, db, f"less than {MIN_FREE_BYTES >> 20} MiB free")
    try:
        asyncio.run(_check_store(db))
    except StoreLocked:
        raise StartupError(f"another gateway process uses the data directory {directory} (it holds {db}.lock); "
                           "stop that process, or give this one its own LXDGW_DATA_DIR") from None
    except StorageFull as exc:
        raise _full(directory, db, exc.reason) from None
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF in _CORRUPT) or "malformed" in str(exc) or "not a database" in str(exc):
            raise StartupError(f"the job database {db} is corrupt ({exc}): move it and its -wal and -shm files "
                               "aside (the gateway then starts with an empty job history) or restore them from a "
                               "backup") from None
        raise StartupError(f"cannot use the job database {db} ({exc}): check that the data directory is on a "
                           "writable local file system owned by the gateway's user") from None
    except OSError as exc:
        raise StartupError(f"cannot open the job database {db}: {exc.strerror or exc}; make the data directory "
                           "writable by the gateway's user") from None
    except RuntimeError as exc:  # a database from a newer gateway
        raise StartupError(str(exc)) from None


def check_shared_database(settings: Settings) -> None:
    """Connect to the PostgreSQL job database, migrate its schema, read and write once."""
    where = describe(settings)
    try:
        asyncio.run(_check_shared(settings.job_database[1]))
    except StoreUnavailable as exc:
        raise StartupError(f"cannot reach the job database {where} ({exc.reason}): check LXDGW_DATABASE_URL, and "
                           "that the server runs and accepts this gateway's connections") from None
    except RuntimeError as exc:  # a database from a newer gateway
        raise StartupError(str(exc)) from None
    except Exception as exc:  # refused by the server: permissions, a read-only server...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StartupError(f"cannot use the job database {where} ({reason}): give the gateway's database user the "
                           "right to create tables in it, on a writable server") from None


async def _check_shared(url: str) -> None:
    from app.store.postgres import PostgresJobStore

    store = PostgresJobStore(url)
    try:
        await store.open()
        await store.check()
    finally:
        await store.close()


async def _check_store(db: Path) -> None:
    store = SQLiteJobStore(db)
    try:
        await store.open()
        await store.check()
    finally:
        await store.close()
