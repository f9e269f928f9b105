"""API tokens: named, scoped, optionally limited to remotes and projects, optionally expiring.

Only a sha256 of each secret is kept, in one JSON file written atomically (temp file + rename). The file is read
again whenever it changes on disk, so a token revoked by the CLI or another process stops working at once.
Secrets are compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

TOKEN_PREFIX = "lxdgw_"


class Scope(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"


# What each scope implies: admin covers write covers read.
IMPLIED = {Scope.admin: {Scope.admin, Scope.write, Scope.read}, Scope.write: {Scope.write, Scope.read},
           Scope.read: {Scope.read}}


class TokenRecord(BaseModel):
    """A token as stored: never the secret, only its hash."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    scopes: list[Scope]
    remotes: list[str] | None = Field(None, description="remotes the token may use; null means all")
    projects: list[str] | None = Field(None, description="projects the token may use; null means all")
    expires_at: dt.datetime | None = None
    allow: list[str] = Field(default_factory=list, description="policy rules this token may use (SECURITY.md)")
    created_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    secret_sha256: str

    @property
    def id(self) -> str:
        """A stable id of this token (not its name: a name can be reused by a later token with another secret)."""
        return hashlib.sha256(b"lxdgw-token-id:" + self.secret_sha256.encode()).hexdigest()[:24]

    def effective_scopes(self) -> set[Scope]:
        out: set[Scope] = set()
        for s in self.scopes:
            out |= IMPLIED[s]
        return out

    def expired(self, now: dt.datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        exp = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=dt.UTC)
        return (now or dt.datetime.now(dt.UTC)) >= exp

    def allows_remote(self, remote: str) -> bool:
        return self.remotes is None or remote in self.remotes

    def allows_project(self, project: str) -> bool:
        return self.projects is None or project in self.projects


class TokenExists(ValueError):
    pass


class TokenNotFound(KeyError):
    pass


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def find_live(records: list[TokenRecord], secret: str) -> TokenRecord | None:
    """The unexpired record of `secret` among `records`; every one is compared in constant time."""
    digest = hash_secret(secret)
    found = None
    for r in records:
        if hmac.compare_digest(r.secret_sha256, digest):
            found = r
    if found is None or found.expired():
        return None
    return found


class Tokens(Protocol):
    """Where the tokens are: the tokens file (`TokenStore`, with SQLite) or the shared database
    (`app.store.pg_state.PostgresTokenStore`, with PostgreSQL). Every method is synchronous: reads are answered
    from memory (the file's last reading, or the database's cache), writes are short and rare (call them in a
    thread from async code)."""

    def get(self, name: str) -> TokenRecord: ...

    def create(self, name: str, scopes: list[Scope], *, remotes: list[str] | None = None,
               projects: list[str] | None = None, expires_at: dt.datetime | None = None,
               allow: list[str] | None = None) -> tuple[TokenRecord, str]: ...

    def revoke(self, name: str) -> None: ...

    def authenticate(self, secret: str) -> TokenRecord | None: ...

    def by_id(self) -> dict[str, TokenRecord]: ...

    def is_live(self, token_id: str) -> bool: ...

    def list(self) -> list[TokenRecord]: ...  # last: its name would hide the builtin in the annotations above


class TokenStore:
    """The tokens file. Safe to share between the server and the CLI."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None  # (inode, mtime, size): a rename always changes it
        self._records: dict[str, TokenRecord] = {}

    def _reload(self) -> None:
        try:
            stamp = _stamp(self.path)
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        data = json.loads(self.path.read_text() or "{}")
        self._records = {r["name"]: TokenRecord.model_validate(r) for r in data.get("tokens", [])}
        self._stamp = stamp

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": 1, "tokens": [r.model_dump(mode="json") for r in self._records.values()]},
                          indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = _stamp(self.path)

    def list(self) -> list[TokenRecord]:
        with self._lock:
            self._reload()
            return sorted(self._records.values(), key=lambda r: r.name)

    def get(self, name: str) -> TokenRecord:
        with self._lock:
            self._reload()
            try:
                return self._records[name]
            except KeyError:
                raise TokenNotFound(name) from None

    def create(self, name: str, scopes: list[Scope], *, remotes: list[str] | None = None,
               projects: list[str] | None = None, expires_at: dt.datetime | None = None,
               allow: list[str] | None = None) -> tuple[TokenRecord, str]:
        """Add a token; returns the record and the secret, which is never stored nor shown again."""
        secret = new_secret()
        with self._lock:
            self._reload()
            if name in self._records:
                raise TokenExists(name)
            record = TokenRecord(name=name, scopes=scopes, remotes=remotes, projects=projects,
                                 expires_at=expires_at, allow=allow or [], secret_sha256=hash_secret(secret))
            self._records[name] = record
            self._write()
        return record, secret

    def revoke(self, name: str) -> None:
        with self._lock:
            self._reload()
            if name not in self._records:
                raise TokenNotFound(name)
            del self._records[name]
            self._write()

    def authenticate(self, secret: str) -> TokenRecord | None:
        """The live, unexpired token with this secret, or None. Every record is compared in constant time."""
        with self._lock:
            self._reload()
            records = list(self._records.values())
        return find_live(records, secret)

    def by_id(self) -> dict[str, TokenRecord]:
        """Every token (expired ones too) by its id; the file is re-read when it changed on disk."""
        with self._lock:
            self._reload()
            return {r.id: r for r in self._records.values()}

    def is_live(self, token_id: str) -> bool:
        """Whether the token with this id exists and has not expired."""
        record = self.by_id().get(token_id)
        return record is not None and not record.expired()
