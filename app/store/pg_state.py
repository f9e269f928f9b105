"""What else every gateway process needs, in the shared PostgreSQL database: tokens, one-time tickets, remotes
added at run time. Chosen with the job store (`LXDGW_DATABASE_URL=postgresql://...`); psycopg is imported only then.

- **Tokens** (`PostgresTokenStore`): rows of `tokens` (the record as JSON, the secret only as its sha256). Reads
  (authentication on every request, the open-streams watch) are answered from a copy in memory, never from the
  database; writes go to the database at once (a short connection of their own, so the CLI and tests may call
  them synchronously) and update the writer's copy. Every write bumps `state_versions.tokens` and sends a
  notification on the `tokens` channel; `StateWatch` re-reads the table when one arrives, and checks the version
  every `RECHECK` seconds in case a notification was lost (its connection broke). Each watch, once it has read a
  new version, says so on the `state_seen` channel; a process that creates or revokes a token waits (at most
  `SEEN_WAIT`) until every watching process (the database's sessions named `lxd-gateway-watch`) has read it, so
  that once the write is answered, every other process already answers by it: a revoked token is refused by the
  next request, whichever process it reaches (a process paused or cut off from the database makes the write
  wait `SEEN_WAIT`; it reads the change when it answers again, `RECHECK` at worst).
- **The tokens file** is a bootstrap import: at start-up, each token of the file whose id was never imported is
  added, once (`token_imports` remembers it, so a token revoked in the database is never brought back by a
  restart). A token whose name (or secret) another token of the database holds is not imported (a warning says
  so): the database wins.
- **Tickets** (`PostgresTicketStore`): the sha256 of the ticket, its token's id and its expiry (the database's
  clock, so replicas' clocks need not agree); redeeming is one `DELETE ... RETURNING`, so a ticket is used once
  across all processes.
- **Remotes added at run time** (`PostgresRemoteStore`): the spec, client certificate, server certificate and the
  client key encrypted with AES-GCM under a key derived from `LXDGW_SECRET_KEY` (never in the database; the remote's
  name is the associated data, so a row's key cannot be moved to another row). Each process decrypts a remote's
  key into a private directory of its own (0700; in memory under `/dev/shm` where it can, else the temporary
  directory; removed at stop, or at the next start of a gateway when the process was killed) because TLS loads it
  from a file. The `remotes`
  channel and version tell the other processes to add or drop it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.lxd.registry import RemoteSpec
from app.store.errors import StoreUnavailable
from app.store.remotes import RemoteStore
from app.store.tokens import (
    Scope,
    TokenExists,
    TokenNotFound,
    TokenRecord,
    TokenStore,
    find_live,
    hash_secret,
    new_secret,
)
from app.tasks import cancel_and_wait

if TYPE_CHECKING:
    import datetime as dt

    import psycopg

    from app.store.postgres import PostgresJobStore

log = logging.getLogger(__name__)

RECHECK = 1.0
"""Seconds between two checks of the state versions (the fallback when a notification is lost)."""
SEEN_WAIT = 1.0
"""Seconds a token write waits, at most, for every watching process to have read it."""
SEEN_CHANNEL = "state_seen"
WATCH_APPLICATION = "lxd-gateway-watch"
"""`application_name` of the watch's connection: a write waits for each session of this name to have read it."""
IMPORT_LOCK = 0x6C7864677702
"""`pg_advisory_xact_lock` key of the tokens file import (replicas starting together import once)."""


class SecretKeyMissing(Exception):
    """No `LXDGW_SECRET_KEY`/`LXDGW_SECRET_KEY_FILE`: a remote's private key cannot be stored nor read."""


@contextlib.contextmanager
def _connect(conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    import psycopg

    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(" ".join(str(exc).split()) or type(exc).__name__) from None
    with conn:
        yield conn


def _bump(conn: psycopg.Connection[Any], name: str) -> int:
    """In the caller's transaction: the next version of `name` (returned), and a notification on its channel (sent
    at commit)."""
    row = conn.execute("UPDATE state_versions SET version = version + 1 WHERE name = %s RETURNING version",
                       (name,)).fetchone()
    version = int(row[0]) if row else 0
    conn.execute("SELECT pg_notify(%s, %s)", (name, str(version)))
    return version


def _await_seen(conn: psycopg.Connection[Any], name: str, version: int, wait: float = SEEN_WAIT) -> None:
    """Wait (at most `wait` seconds) until every process watching the shared state has read `version` of `name`.
    `conn` LISTENed on `SEEN_CHANNEL` before the write committed, so no acknowledgement is missed."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = %s", (WATCH_APPLICATION,)).fetchall()
    waiting = {int(r[0]) for r in rows}
    deadline = time.monotonic() + wait
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("%d gateway processes have not read %s version %d after %.1fs; they read it when they "
                        "answer again", len(waiting), name, version, wait)
            return
        for notice in conn.notifies(timeout=left, stop_after=1):
            seen_name, _, seen = notice.payload.partition(" ")
            if seen_name == name and seen.isdigit() and int(seen) >= version:
                waiting.discard(notice.pid)


_READ_TOKENS = ("SELECT (SELECT version FROM state_versions WHERE name = 'tokens') AS version, "
                "coalesce((SELECT json_agg(record) FROM tokens), '[]'::json) AS records")
"""Every token and the version they make, in one statement (so one snapshot)."""


# -- tokens ----------------------------------------------------------------------------------------------------


class PostgresTokenStore:
    """Tokens in the shared database, read from memory (see the module's notes)."""

    def __init__(self, conninfo: str, *, bootstrap: Path | None = None) -> None:
        self._conninfo = conninfo
        self.bootstrap = bootstrap
        self._lock = threading.Lock()
        self._records: dict[str, TokenRecord] = {}
        self._version = -1
        """The version of `state_versions.tokens` the copy reflects: an older reading never replaces it."""
        self._loaded = False
        self.on_change: Callable[[], None] | None = None
        """Called (in the event loop) after a change made by another process was read, e.g. to check open streams."""

    # the copy in memory

    def _set(self, row: Any) -> None:
        version, raw = row
        records = {}
        for item in raw if isinstance(raw, list) else json.loads(raw):
            record = TokenRecord.model_validate(item)
            records[record.name] = record
        with self._lock:
            if int(version) >= self._version:
                self._records, self._version, self._loaded = records, int(version), True

    def _changed(self, version: int, name: str, record: TokenRecord | None) -> None:
        """This process's own write (committed as `version`), in the copy at once."""
        with self._lock:
            if record is None:
                self._records.pop(name, None)
            else:
                self._records[name] = record
            self._version = max(self._version, version)

    def refresh(self) -> None:
        """Read every token again (synchronously)."""
        with _connect(self._conninfo) as conn:
            self._set(conn.execute(_READ_TOKENS).fetchone())

    async def refresh_on(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(_READ_TOKENS)
        self._set(await cur.fetchone())
        if self.on_change is not None:
            self.on_change()

    def _snapshot(self) -> dict[str, TokenRecord]:
        if not self._loaded:
            self.refresh()
        with self._lock:
            return dict(self._records)

    # Tokens

    def get(self, name: str) -> TokenRecord:
        try:
            return self._snapshot()[name]
        except KeyError:
            raise TokenNotFound(name) from None

    def create(self, name: str, scopes: list[Scope], *, remotes: list[str] | None = None,
               projects: list[str] | None = None, expires_at: dt.datetime | None = None,
               allow: list[str] | None = None) -> tuple[TokenRecord, str]:
        secret = new_secret()
        record = TokenRecord(name=name, scopes=scopes, remotes=remotes, projects=projects, expires_at=expires_at,
                             allow=allow or [], secret_sha256=hash_secret(secret))
        with _connect(self._conninfo) as conn:
            conn.execute(f"LISTEN {SEEN_CHANNEL}")
            with conn.transaction():
                if not self._insert(conn, record):
                    raise TokenExists(name)
                version = _bump(conn, "tokens")
            self._changed(version, name, record)
            _await_seen(conn, "tokens", version)
        return record, secret

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], record: TokenRecord) -> bool:
        row = conn.execute("INSERT INTO tokens (name, id, secret_sha256, record, created_at) "
                           "VALUES (%s, %s, %s, %s::json, %s) ON CONFLICT DO NOTHING RETURNING name",
                           (record.name, record.id, record.secret_sha256, record.model_dump_json(),
                            record.created_at)).fetchone()
        return row is not None

    def revoke(self, name: str) -> None:
        with _connect(self._conninfo) as conn:
            conn.execute(f"LISTEN {SEEN_CHANNEL}")
            with conn.transaction():
                row = conn.execute("DELETE FROM tokens WHERE name = %s RETURNING id", (name,)).fetchone()
                if row is None:
                    raise TokenNotFound(name)
                conn.execute("DELETE FROM tickets WHERE token_id = %s", (row[0],))
                version = _bump(conn, "tokens")
            self._changed(version, name, None)
            _await_seen(conn, "tokens", version)

    def authenticate(self, secret: str) -> TokenRecord | None:
        return find_live(list(self._snapshot().values()), secret)

    def by_id(self) -> dict[str, TokenRecord]:
        return {r.id: r for r in self._snapshot().values()}

    def is_live(self, token_id: str) -> bool:
        record = self.by_id().get(token_id)
        return record is not None and not record.expired()

    # the tokens file, imported once

    def import_file(self, path: Path) -> tuple[int, list[str]]:
        """Add the tokens of the file at `path` never imported before; (how many were added, names refused because
        the database holds another token of that name or secret)."""
        if not path.is_file():
            return 0, []
        records = TokenStore(path).list()
        added, refused = 0, []
        with _connect(self._conninfo) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (IMPORT_LOCK,))
            for record in records:
                if conn.execute("INSERT INTO token_imports (id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id",
                                (record.id,)).fetchone() is None:
                    continue  # imported once already (and perhaps revoked since)
                if self._insert(conn, record):
                    added += 1
                elif conn.execute("SELECT 1 FROM tokens WHERE id = %s", (record.id,)).fetchone() is None:
                    refused.append(record.name)
            if added:
                _bump(conn, "tokens")
        for name in refused:
            log.warning("token %r of %s was not imported: the database holds another token of that name", name, path)
        if added:
            log.info("imported %d tokens from %s into the database", added, path)
        self.refresh()
        return added, refused

    def list(self) -> list[TokenRecord]:  # last: its name would hide the builtin in the annotations above
        return sorted(self._snapshot().values(), key=lambda r: r.name)


# -- tickets ---------------------------------------------------------------------------------------------------


class PostgresTicketStore:
    """One-time tickets in the shared database (only their sha256), each for one token id, used once anywhere."""

    def __init__(self) -> None:
        self._store: PostgresJobStore | None = None

    def bind(self, store: PostgresJobStore) -> None:
        self._store = store

    def _db(self) -> PostgresJobStore:
        if self._store is None:
            raise StoreUnavailable("the gateway is starting")
        return self._store

    async def put(self, ticket: str, token_id: str, authenticated: bool, ttl: float) -> None:
        async with self._db().connection() as conn:
            await conn.execute("DELETE FROM tickets WHERE expires_at < extract(epoch FROM now())")
            await conn.execute("INSERT INTO tickets (ticket_sha256, token_id, authenticated, expires_at) "
                               "VALUES (%s, %s, %s, extract(epoch FROM now()) + %s)",
                               (hash_secret(ticket), token_id, authenticated, ttl))

    async def take(self, ticket: str) -> tuple[str, bool] | None:
        """(token id, authenticated) of an unexpired ticket, which is gone from then on; None when there is none."""
        async with self._db().connection() as conn:
            cur = await conn.execute("DELETE FROM tickets WHERE ticket_sha256 = %s RETURNING token_id, authenticated, "
                                     "expires_at >= extract(epoch FROM now()) AS fresh", (hash_secret(ticket),))
            row = await cur.fetchone()
        if row is None or not row["fresh"]:  # type: ignore[call-overload]
            return None
        return row["token_id"], row["authenticated"]  # type: ignore[call-overload]


# -- remotes added at run time ---------------------------------------------------------------------------------


def _aead(secret: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(hashlib.sha256(b"lxd-gateway remote keys\0" + secret).digest())


def encrypt_key(secret: bytes, name: str, key_pem: bytes) -> bytes:
    nonce = os.urandom(12)
    return b"v1" + nonce + _aead(secret).encrypt(nonce, key_pem, name.encode())


def decrypt_key(secret: bytes, name: str, blob: bytes) -> bytes:
    """The private key; raises `cryptography.exceptions.InvalidTag` with another secret (or another row's blob)."""
    if blob[:2] != b"v1":
        raise ValueError("unknown key encoding")
    return bytes(_aead(secret).decrypt(blob[2:14], blob[14:], name.encode()))


def fingerprint_of(secret: bytes) -> str:
    return base64.b32encode(hashlib.sha256(b"lxd-gateway key id\0" + secret).digest()[:5]).decode().lower()


RUNTIME_PREFIX = "lxdgw-remotes-"


def _runtime_base() -> Path:
    """Where the decrypted keys go: memory (`/dev/shm`) when it can be written, else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresRemoteStore(RemoteStore):
    """Run-time remotes in the shared database; the files TLS needs live in a private directory of this process."""

    def __init__(self, conninfo: str, secret: bytes | None) -> None:
        super().__init__(_runtime_base() / f"{RUNTIME_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
        self._conninfo = conninfo
        self._secret = secret
        self._known: dict[str, RemoteSpec] = {}
        """The run-time remotes this process serves, by name (as `sync` left them)."""
        self._certs: dict[str, str] = {}

    def open(self) -> None:
        """Make the private directory of the decrypted keys (0700), after removing those that processes of this
        user which no longer run left behind (killed before they could remove theirs)."""
        for stale in self.data_dir.parent.glob(f"{RUNTIME_PREFIX}*"):
            pid = stale.name[len(RUNTIME_PREFIX):].partition("-")[0]
            with contextlib.suppress(OSError, ValueError):
                if stale.stat().st_uid == os.getuid() and not _running(int(pid)):
                    shutil.rmtree(stale, ignore_errors=True)
        self.data_dir.mkdir(mode=0o700)

    @property
    def can_save(self) -> bool:
        return self._secret is not None

    def names(self) -> set[str]:
        return set(self._known)

    def save(self, spec: RemoteSpec) -> None:
        if self._secret is None:
            raise SecretKeyMissing("set LXDGW_SECRET_KEY or LXDGW_SECRET_KEY_FILE")
        assert spec.client_cert and spec.client_key
        cert = Path(spec.client_cert).read_text()
        key = encrypt_key(self._secret, spec.name, Path(spec.client_key).read_bytes())
        server = self.cert_dir(spec.name) / "server.crt"
        fields = {k: v for k, v in asdict(spec).items() if k not in ("client_cert", "client_key", "server_cert")}
        self._certs[spec.name] = cert  # this process's watch must not load it again
        try:
            self._insert_remote(spec.name, fields, cert, key, server.read_text() if server.exists() else None)
        except BaseException:
            self._certs.pop(spec.name, None)
            raise
        self._known[spec.name] = spec

    def _insert_remote(self, name: str, fields: dict[str, Any], cert: str, key: bytes, server: str | None) -> None:
        with _connect(self._conninfo) as conn, conn.transaction():
            conn.execute("INSERT INTO remotes (name, spec, client_cert, client_key, server_cert) "
                         "VALUES (%s, %s::json, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, "
                         "client_cert = excluded.client_cert, client_key = excluded.client_key, "
                         "server_cert = excluded.server_cert",
                         (name, json.dumps(fields), cert, key, server))
            _bump(conn, "remotes")

    def remove(self, name: str) -> bool:
        with _connect(self._conninfo) as conn, conn.transaction():
            found = conn.execute("DELETE FROM remotes WHERE name = %s RETURNING name", (name,)).fetchone()
            if found is not None:
                _bump(conn, "remotes")
        self._known.pop(name, None)
        self._certs.pop(name, None)
        shutil.rmtree(self.cert_dir(name), ignore_errors=True)
        return found is not None

    def _materialize(self, name: str, fields: dict[str, Any], cert: str, blob: bytes,
                     server: str | None) -> RemoteSpec | None:
        from cryptography.exceptions import InvalidTag

        from app.lxd.pem import Certificate

        if self._secret is None:
            log.error("remote %r added at run time is not served: LXDGW_SECRET_KEY (or LXDGW_SECRET_KEY_FILE) is "
                      "needed to read its private key", name)
            return None
        try:
            key = decrypt_key(self._secret, name, bytes(blob))
        except (InvalidTag, ValueError):
            log.error("remote %r added at run time is not served: its private key does not decrypt with "
                      "LXDGW_SECRET_KEY (key id %s)", name, fingerprint_of(self._secret))
            return None
        cert_path, key_path = self.write_identity(name, Certificate.from_pem(cert.encode(), key))
        if server:
            self.write_server_cert(name, server)
        known = {k: v for k, v in fields.items() if k in RemoteSpec.__dataclass_fields__}
        return RemoteSpec(**{**known, "name": name, "client_cert": cert_path, "client_key": key_path,
                             "server_cert": None, "default": False})

    def load_changes(self) -> tuple[list[RemoteSpec], list[str]]:
        """Read the remotes again: (remotes to serve, new or changed; names to drop). Updates what `names` says."""
        with _connect(self._conninfo) as conn:
            rows = conn.execute("SELECT name, spec, client_cert, client_key, server_cert FROM remotes").fetchall()
        seen, added = set(), []
        for name, fields, cert, blob, server in rows:
            seen.add(name)
            if self._certs.get(name) == cert:
                continue
            spec = self._materialize(name, fields if isinstance(fields, dict) else json.loads(fields), cert, blob,
                                     server)
            if spec is not None:
                self._known[name], self._certs[name] = spec, cert
                added.append(spec)
        dropped = [n for n in self._known if n not in seen]
        for name in dropped:
            self._known.pop(name, None)
            self._certs.pop(name, None)
            shutil.rmtree(self.cert_dir(name), ignore_errors=True)
        return added, dropped

    def close(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


# -- the watch -------------------------------------------------------------------------------------------------


class StateWatch:
    """LISTENs on the channels of `handlers` and checks their versions every `interval` seconds; calls a handler,
    with the watch's connection, when its version changed (also once at start)."""

    def __init__(self, conninfo: str, handlers: dict[str, Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]],
                 interval: float = RECHECK) -> None:
        self._conninfo = conninfo
        self.handlers = handlers
        self.interval = interval
        self._versions: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute("SELECT name, version FROM state_versions")
        for name, version in await cur.fetchall():
            handler = self.handlers.get(name)
            if handler is not None and self._versions.get(name) != version:
                await handler(conn)
                self._versions[name] = version
                await conn.execute("SELECT pg_notify(%s, %s)", (SEEN_CHANNEL, f"{name} {version}"))

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        """A connection that LISTENs on every channel, the handlers run once on it (what changed while none
        listened)."""
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                     application_name=WATCH_APPLICATION)
        try:
            for channel in self.handlers:
                await conn.execute(f"LISTEN {channel}")
            await self._check(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        while True:
            try:
                if conn is None:
                    conn = await self._listen()
                async with conn:
                    while True:
                        async for _ in conn.notifies(timeout=self.interval, stop_after=1):
                            pass
                        await self._check(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watching the shared state failed (%s); retrying", " ".join(str(exc).split()))
            conn = None
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Run the handlers once (when the database answers), then keep watching."""
        conn = None
        try:
            conn = await self._listen()
        except Exception as exc:
            log.warning("reading the shared state failed (%s); retrying", " ".join(str(exc).split()))
        self._task = asyncio.get_running_loop().create_task(self._run(conn), name="shared-state-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


# -- the whole ---------------------------------------------------------------------------------------------------


class SharedState:
    """Tokens, tickets and run-time remotes of one gateway process on PostgreSQL, and the watch that keeps them
    current. `start` after the job store is open (its migrations made the tables)."""

    def __init__(self, conninfo: str, *, tokens_file: Path, secret: bytes | None) -> None:
        self.conninfo = conninfo
        self.tokens_file = tokens_file
        self.tokens = PostgresTokenStore(conninfo, bootstrap=tokens_file)
        self.tickets = PostgresTicketStore()
        self.remotes = PostgresRemoteStore(conninfo, secret)
        self.on_remotes: Callable[[list[RemoteSpec], list[str]], Awaitable[None]] | None = None
        """Called with the remotes another process added (or changed) and the names it removed."""
        self._watch: StateWatch | None = None

    async def start(self, store: PostgresJobStore) -> None:
        self.tickets.bind(store)
        self.remotes.open()
        try:
            await asyncio.to_thread(self.tokens.import_file, self.tokens_file)
        except StoreUnavailable as exc:
            log.warning("the tokens file was not imported (the database is unreachable: %s); the next start "
                        "imports it", exc.reason)
        self._watch = StateWatch(self.conninfo, {"tokens": self.tokens.refresh_on, "remotes": self._remotes})
        await self._watch.start()

    async def _remotes(self, conn: psycopg.AsyncConnection[Any]) -> None:
        added, dropped = await asyncio.to_thread(self.remotes.load_changes)
        if (added or dropped) and self.on_remotes is not None:
            await self.on_remotes(added, dropped)

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        self.remotes.close()


def shared_state(url: str, *, tokens_file: Path, secret: bytes | None) -> SharedState:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from app.store.postgres import DEFAULT_CONNECT_TIMEOUT

    params = conninfo_to_dict(url)
    params.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    params.setdefault("application_name", "lxd-gateway")
    return SharedState(make_conninfo("", **params), tokens_file=tokens_file, secret=secret)
