"""Which job database the gateway uses (`LXDGW_DATABASE_URL`): the embedded SQLite file, or a shared PostgreSQL.

`job_store(settings)` makes the store (psycopg is imported only for PostgreSQL); `redact_url` is the URL as logs and
messages may show it (without its password).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.store.jobs import SQLiteJobStore

if TYPE_CHECKING:
    from app.jobs.store import JobStore
    from app.settings import Settings
    from app.store.pg_state import SharedState

_PASSWORD_PARAM = re.compile(r"(?i)([?&]password=)[^&\s]*")


def redact_url(url: str) -> str:
    """`url` with its password (in the user part or a `password=` parameter) replaced by `***`."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return "<an unreadable URL>"
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        if sep:
            url = url.replace(f"//{netloc}", f"//{user}:***@{host}", 1)
    return _PASSWORD_PARAM.sub(r"\1***", url)


def describe(settings: Settings) -> str:
    """The job database as messages name it: its file, or its URL without password."""
    kind, target = settings.job_database
    return target if kind == "sqlite" else redact_url(target)


def job_store(settings: Settings) -> JobStore:
    """The job store `settings` choose, not open yet."""
    kind, target = settings.job_database
    if kind == "postgresql":
        from app.store.postgres import PostgresJobStore

        return PostgresJobStore(target)
    return SQLiteJobStore(Path(target))


def shared_state(settings: Settings) -> SharedState | None:
    """Tokens, tickets and run-time remotes in the PostgreSQL database `settings` choose; None with SQLite (the
    tokens file, tickets in memory, remotes in the data directory)."""
    kind, target = settings.job_database
    if kind != "postgresql":
        return None
    from app.store.pg_state import shared_state as make

    return make(target, tokens_file=settings.tokens_path, secret=settings.remote_key_secret())
