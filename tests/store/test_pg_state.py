"""Tokens, one-time tickets and remotes added at run time in a real PostgreSQL database: shared by every process,
the tokens file imported once, private keys that a copy of the database alone cannot read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from app.lxd.pem import Certificate
from app.lxd.registry import RemoteSpec
from app.store.errors import StoreUnavailable
from app.store.pg_state import SharedState, decrypt_key, shared_state
from app.store.postgres import PostgresJobStore
from app.store.tokens import Scope, TokenExists, TokenNotFound, TokenStore
from tests.support.postgres import PostgresServer

SECRET = b"a-secret-key-of-at-least-32-characters!"


async def _opened(url: str, tmp_path: Path, name: str, secret: bytes | None = SECRET) -> tuple[PostgresJobStore,
                                                                                               SharedState]:
    store = PostgresJobStore(url)
    await store.open()
    state = shared_state(url, tokens_file=tmp_path / f"{name}-tokens.json", secret=secret)
    await state.start(store)
    return store, state


async def _closed(*pairs: tuple[PostgresJobStore, SharedState]) -> None:
    for store, state in pairs:
        await state.stop()
        await store.close()


async def _until(predicate: object, timeout: float = 2.0) -> float:
    """Seconds until `predicate()` holds (fails after `timeout`)."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "not within the staleness bound"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_a_token_revoked_by_one_process_is_refused_by_another(postgres_url: str, tmp_path: Path) -> None:
    a, b = await _opened(postgres_url, tmp_path, "a"), await _opened(postgres_url, tmp_path, "b")
    try:
        changed = []
        b[1].tokens.on_change = lambda: changed.append(1)
        record, secret = a[1].tokens.create("ci", [Scope.write], projects=["default"])
        await _until(lambda: b[1].tokens.authenticate(secret) is not None)
        assert b[1].tokens.get("ci") == record and b[1].tokens.is_live(record.id)
        with pytest.raises(TokenExists):
            b[1].tokens.create("ci", [Scope.read])
        a[1].tokens.revoke("ci")
        assert a[1].tokens.authenticate(secret) is None  # the writer at once
        seen = await _until(lambda: b[1].tokens.authenticate(secret) is None, timeout=1.0)
        assert seen < 1.0 and changed  # by notification: far below the fallback check's second
        with pytest.raises(TokenNotFound):
            b[1].tokens.revoke("ci")
    finally:
        await _closed(a, b)


async def test_the_fallback_check_finds_a_change_whose_notification_was_lost(postgres_url: str,
                                                                             tmp_path: Path) -> None:
    a = await _opened(postgres_url, tmp_path, "a")
    try:
        _, secret = a[1].tokens.create("quiet", [Scope.read])
        async with a[0].connection() as conn:  # deleted without a notification: only the version says so
            await conn.execute("DELETE FROM tokens WHERE name = 'quiet'")
            await conn.execute("UPDATE state_versions SET version = version + 1 WHERE name = 'tokens'")
        assert await _until(lambda: a[1].tokens.authenticate(secret) is None, timeout=1.5) <= 1.5
    finally:
        await _closed(a)


async def test_the_tokens_file_is_imported_once(postgres_url: str, tmp_path: Path) -> None:
    file = TokenStore(tmp_path / "a-tokens.json")
    _, kept = file.create("from-file", [Scope.read])
    _, clash = file.create("taken", [Scope.admin])
    store = PostgresJobStore(postgres_url)
    await store.open()
    state = shared_state(postgres_url, tokens_file=tmp_path / "a-tokens.json", secret=None)
    _, in_db = state.tokens.create("taken", [Scope.read])  # the database already holds another "taken"
    await state.start(store)
    try:
        assert state.tokens.authenticate(kept) is not None
        assert state.tokens.authenticate(clash) is None and state.tokens.authenticate(in_db) is not None
        state.tokens.revoke("from-file")
        assert await asyncio.to_thread(state.tokens.import_file, tmp_path / "a-tokens.json") == (0, [])
        assert state.tokens.authenticate(kept) is None  # a restart does not bring a revoked token back
    finally:
        await state.stop()
        await store.close()


async def test_a_ticket_is_used_once_by_any_process(postgres_url: str, tmp_path: Path) -> None:
    a, b = await _opened(postgres_url, tmp_path, "a"), await _opened(postgres_url, tmp_path, "b")
    try:
        await a[1].tickets.put("lxdgwt_one", "token-1", True, 30)
        assert await b[1].tickets.take("lxdgwt_one") == ("token-1", True)
        assert await a[1].tickets.take("lxdgwt_one") is None and await b[1].tickets.take("lxdgwt_one") is None
        await a[1].tickets.put("lxdgwt_stale", "token-1", True, -1)
        assert await b[1].tickets.take("lxdgwt_stale") is None
        async with a[0].connection() as conn:
            cur = await conn.execute("SELECT ticket_sha256 FROM tickets")
            assert all("lxdgwt_" not in row["ticket_sha256"] for row in await cur.fetchall())
    finally:
        await _closed(a, b)


def _identity(tmp_path: Path, name: str) -> RemoteSpec:
    cert = Certificate.generate(f"lxd-gateway-{name}", common_name=f"lxd-gateway-{name}")
    (tmp_path / f"{name}.crt").write_bytes(cert.cert_pem)
    (tmp_path / f"{name}.key").write_bytes(cert.key_pem)
    return RemoteSpec(name=name, url="https://192.0.2.1:8443", client_cert=str(tmp_path / f"{name}.crt"),
                      client_key=str(tmp_path / f"{name}.key"), server_fingerprint="ab" * 32)


async def test_remote_keys_are_encrypted_and_need_the_secret_key(postgres_url: str, tmp_path: Path) -> None:
    a = await _opened(postgres_url, tmp_path, "a")
    b = await _opened(postgres_url, tmp_path, "b", secret=None)
    wrong = await _opened(postgres_url, tmp_path, "w", secret=b"another-secret-key-of-32-characters-or-more")
    try:
        spec = _identity(tmp_path, "lxd2")
        await asyncio.to_thread(a[1].remotes.save, spec)
        async with a[0].connection() as conn:
            row = await (await conn.execute("SELECT client_key FROM remotes WHERE name = 'lxd2'")).fetchone()
        blob = bytes(row["client_key"])  # type: ignore[index]
        key = Path(spec.client_key or "").read_bytes()
        assert b"PRIVATE KEY" not in blob and key not in blob
        with pytest.raises(InvalidTag):
            decrypt_key(b"another-secret-key-of-32-characters-or-more", "lxd2", blob)
        with pytest.raises(InvalidTag):
            decrypt_key(SECRET, "another-name", blob)  # a row's key cannot be moved to another remote
        assert decrypt_key(SECRET, "lxd2", blob) == key

        c = await _opened(postgres_url, tmp_path, "c")  # a process started later, with the key
        try:
            followed: list[tuple[list[str], list[str]]] = []

            async def follow_c(added: list[RemoteSpec], dropped: list[str]) -> None:
                followed.append(([s.name for s in added], dropped))

            c[1].on_remotes = follow_c
            assert c[1].remotes.names() == {"lxd2"}
            assert c[1].remotes.load_changes() == ([], [])  # nothing new since
            spec_c = c[1].remotes._known["lxd2"]
            assert Path(spec_c.client_key or "").read_bytes() == key
            assert (Path(spec_c.client_key or "").stat().st_mode & 0o777) == 0o600
            # without the key, or with another one, the remote is not served
            assert b[1].remotes.names() == set() and wrong[1].remotes.names() == set()
            assert not b[1].remotes.can_save
            await asyncio.to_thread(a[1].remotes.remove, "lxd2")
            await _until(lambda: followed == [([], ["lxd2"])], timeout=1.5)
            assert c[1].remotes.names() == set() and not Path(spec_c.client_key or "").exists()
        finally:
            await _closed(c)
    finally:
        await _closed(a, b, wrong)


def test_decrypted_keys_live_in_a_private_directory_that_a_killed_process_leaves_to_the_next(tmp_path: Path) -> None:
    import subprocess

    from app.store.pg_state import RUNTIME_PREFIX, PostgresRemoteStore

    gone_pid = subprocess.Popen(["true"])
    gone_pid.wait()
    store = PostgresRemoteStore("dbname=unused", SECRET)
    left = store.data_dir.parent / f"{RUNTIME_PREFIX}{gone_pid.pid}-0000"
    left.mkdir(mode=0o700)
    (left / "client.key").write_text("stale")
    store.open()
    try:
        assert not left.exists()
        assert store.data_dir.stat().st_mode & 0o777 == 0o700
        assert str(store.data_dir).startswith("/dev/shm/") or not Path("/dev/shm").is_dir()
    finally:
        store.close()
    assert not store.data_dir.exists()


async def test_while_the_database_is_down_tokens_still_authenticate_and_writes_fail_fast(
        postgres_server: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    a, b = await _opened(postgres_url, tmp_path, "a"), await _opened(postgres_url, tmp_path, "b")
    try:
        _, secret = a[1].tokens.create("ci", [Scope.read])
        await _until(lambda: b[1].tokens.authenticate(secret) is not None)
        postgres_server.stop("immediate")
        try:
            assert b[1].tokens.authenticate(secret) is not None  # from memory: no database on the hot path
            for call in (lambda: asyncio.to_thread(a[1].tokens.create, "other", [Scope.read]),
                         lambda: a[1].tickets.put("lxdgwt_x", "id", True, 30), lambda: b[1].tickets.take("x")):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await call()
                assert time.monotonic() - started < 3.5
        finally:
            postgres_server.start()
        a[1].tokens.revoke("ci")  # b's watch reconnects by itself and reads what changed
        await _until(lambda: b[1].tokens.authenticate(secret) is None, timeout=5)
    finally:
        await _closed(a, b)


async def test_a_ticket_for_a_token_made_elsewhere_a_moment_ago_is_redeemed(postgres_url: str,
                                                                           tmp_path: Path) -> None:
    from app.http.auth import Principal, SharedTicketBook

    a, b = await _opened(postgres_url, tmp_path, "a"), await _opened(postgres_url, tmp_path, "b")
    try:
        assert b[1]._watch is not None
        await b[1]._watch.stop()  # b has not heard of the token yet
        record, _ = a[1].tokens.create("web", [Scope.read])
        assert record.id not in b[1].tokens.by_id()
        ticket, _ = await SharedTicketBook(a[1].tokens, a[1].tickets).issue(Principal.from_record(record))
        redeemed = await SharedTicketBook(b[1].tokens, b[1].tickets).redeem(ticket)
        assert redeemed is not None and redeemed.name == "web" and redeemed.token_id == record.id
    finally:
        await _closed(a, b)


async def test_a_reading_older_than_this_process_s_own_write_does_not_undo_it(postgres_url: str,
                                                                              tmp_path: Path) -> None:
    a = await _opened(postgres_url, tmp_path, "a")
    try:
        async with a[0].connection() as conn:  # what the watch may have read just before the writes below
            stale = (await (await conn.execute("SELECT version FROM state_versions WHERE name = 'tokens'"))
                     .fetchone())["version"]  # type: ignore[index]
        _, kept = a[1].tokens.create("new", [Scope.read])
        a[1].tokens._set((stale, []))
        assert a[1].tokens.authenticate(kept) is not None
        _, gone = a[1].tokens.create("gone", [Scope.read])
        before_revoke = [r.model_dump(mode="json") for r in a[1].tokens.list()]
        a[1].tokens.revoke("gone")
        a[1].tokens._set((stale + 2, before_revoke))  # read before the revocation committed
        assert a[1].tokens.authenticate(gone) is None
    finally:
        await _closed(a)
