"""Console sessions over the SQLite job store: a session never outlives its token, and dies when the token goes."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from types import SimpleNamespace

from app.store.jobs import SQLiteJobStore
from app.store.tokens import Scope, TokenStore
from app.ui.sessions import SESSION_TTL, ConsoleSessions


async def test_a_session_ends_with_its_token_and_at_logout(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "tokens.json")
    tokens.create("short", [Scope.write], expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    tokens.create("long", [Scope.read])
    jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await jobs.open()
    try:
        sessions = ConsoleSessions(SimpleNamespace(jobs=SimpleNamespace(store=jobs), tokens=tokens))
        records = {r.name: r for r in tokens.by_id().values()}
        short = await sessions.open(records["short"])
        long = await sessions.open(records["long"])
        assert short.expires_at <= time.time() + 5 * 60 + 1  # capped by the token's expiry
        assert abs(long.expires_at - (time.time() + SESSION_TTL)) < 5
        assert short.session_id != long.session_id and short.csrf != long.csrf

        found = await sessions.authenticate(long.session_id)
        assert found is not None
        principal, csrf = found
        assert principal.name == "long" and principal.scopes == {Scope.read} and csrf == long.csrf

        tokens.revoke("short")
        assert await sessions.authenticate(short.session_id) is None
        assert await sessions.store.get(short.session_id) is None  # removed, not only refused

        assert await sessions.close(long.session_id) is True
        assert await sessions.authenticate(long.session_id) is None
        assert await sessions.authenticate("lxdgws_never-issued") is None
    finally:
        await jobs.close()
