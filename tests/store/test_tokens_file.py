"""The tokens file as two processes share it: a change made by the other one is always seen, even when it lands
within the same file-timestamp tick (coarse on Linux) as our own last write."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from app.store.tokens import Scope, TokenStore


def test_revocation_by_another_process_in_the_same_timestamp_tick_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    server, cli = TokenStore(path), TokenStore(path)
    record, _ = server.create("deploy", [Scope.write])
    stamp = path.stat().st_mtime_ns
    assert server.is_live(record.id)
    cli.revoke("deploy")
    os.utime(path, ns=(stamp, stamp))  # the other write got the very same mtime
    assert not server.is_live(record.id)
    assert record.id not in server.by_id()


def test_expired_token_is_known_but_not_live(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    record, _ = store.create("old", [Scope.read], expires_at=past)
    assert record.id in store.by_id() and not store.is_live(record.id)
    assert not store.is_live("no-such-id")
