"""The console's sessions: a token exchanged once for an opaque session id kept in an HttpOnly cookie.

The id is 256 random bits; the store keeps only its sha256 (`app.store.sessions`), in the job database, so that
every replica sharing that database knows the session. A session has a fixed lifetime (`SESSION_TTL`, never longer
than its token's), ends at logout, and stands for its token only while that token is live: a revoked or expired
token ends its sessions at their next request. Each session has its own CSRF token, which the page keeps in memory
and sends in `X-CSRF-Token` with every request that is not a read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from dataclasses import dataclass
from typing import Any

from app.http.auth import Principal
from app.store.sessions import SessionStore, session_store
from app.store.tokens import TokenRecord

SESSION_TTL = 8 * 3600.0
"""Seconds a console session lasts from sign-in."""


@dataclass(frozen=True)
class OpenedSession:
    session_id: str
    csrf: str
    expires_at: float

    @property
    def max_age(self) -> int:
        return max(1, int(self.expires_at - time.time()))


class ConsoleSessions:
    """Sign-in, lookup and logout of console sessions, over the job database the application opened."""

    def __init__(self, state: Any, ttl: float = SESSION_TTL) -> None:
        self.state = state
        self.ttl = ttl
        self._store: SessionStore | None = None

    @property
    def store(self) -> SessionStore:
        if self._store is None:
            self._store = session_store(self.state.jobs.store)
        return self._store

    async def open(self, record: TokenRecord) -> OpenedSession:
        expires_at = time.time() + self.ttl
        if (ends := record.expires_at) is not None:
            expires_at = min(expires_at, (ends if ends.tzinfo else ends.replace(tzinfo=dt.UTC)).timestamp())
        opened = OpenedSession("lxdgws_" + secrets.token_urlsafe(32), secrets.token_urlsafe(32), expires_at)
        await self.store.prune()
        await self.store.put(opened.session_id, record.id, opened.csrf, expires_at)
        return opened

    async def authenticate(self, session_id: str) -> tuple[Principal, str] | None:
        stored = await self.store.get(session_id)
        if stored is None:
            return None
        tokens = self.state.tokens
        record = tokens.by_id().get(stored.token_id)
        refresh = getattr(tokens, "refresh", None)
        if record is None and refresh is not None:  # a token made by another replica a moment ago
            await asyncio.to_thread(refresh)
            record = tokens.by_id().get(stored.token_id)
        if record is None or record.expired():
            await self.store.delete(session_id)
            return None
        return Principal.from_record(record), stored.csrf

    async def close(self, session_id: str) -> bool:
        return await self.store.delete(session_id)
