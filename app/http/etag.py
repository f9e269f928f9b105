"""Small helpers the resource routers share: scope dependencies, ETags and If-Match, JSON merge patches written
under LXD's ETag (`edit`), and turning a core service error that wraps an LXD error into the right problem."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Response

from app.http.auth import Principal, require
from app.http.errors import ProblemError
from app.lxd.errors import LXDError, PreconditionFailed, is_busy
from app.store.tokens import Scope

Reader = Annotated[Principal, Depends(require(Scope.read))]
Writer = Annotated[Principal, Depends(require(Scope.write))]
Admin = Annotated[Principal, Depends(require(Scope.admin))]


def bare_etag(value: str | None) -> str | None:
    """An ETag without `W/` and quotes (LXD compares the bare value); None for an empty one."""
    if not value:
        return None
    value = value.strip()
    value = value.removeprefix("W/")
    return value.strip('"') or None


def set_etag(response: Response, etag: str | None) -> None:
    if etag:
        response.headers["ETag"] = f'"{bare_etag(etag)}"'


def check_if_match(if_match: str | None, current: str | Iterable[str | None] | None, what: str) -> None:
    """412 when the caller's `If-Match` names another version than `current` (one ETag, or several that name
    the same version) (`*` matches anything)."""
    if not if_match or if_match.strip() == "*":
        return
    wanted = {bare_etag(v) for v in if_match.split(",")}
    names = [current] if current is None or isinstance(current, str) else list(current)
    if not wanted & {bare_etag(c) for c in names if c}:
        raise ProblemError(412, f"{what} changed since the ETag given in If-Match was read",
                           slug="precondition-failed")


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: `patch` laid over `target`; `null` removes a key, objects merge recursively."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = merge_patch({}, value)
        else:
            out[key] = value
    return out


class Versioned(Protocol):
    @property
    def etag(self) -> str | None: ...


V = TypeVar("V", bound=Versioned)
EDIT_ATTEMPTS = 10
_edit_locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}


@asynccontextmanager
async def _edit_lock(key: tuple[str, ...]) -> AsyncIterator[None]:
    """One writer at a time per object within this gateway; the lock is dropped when nobody holds or awaits it."""
    lock, users = _edit_locks.get(key) or (asyncio.Lock(), 0)
    _edit_locks[key] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _edit_locks[key]
        if users == 1:
            del _edit_locks[key]
        else:
            _edit_locks[key] = (lock, users - 1)


async def edit(key: tuple[str, ...], if_match: str | None, what: str, read: Callable[[], Awaitable[V]],
               write: Callable[[V], Awaitable[object]],
               versions: Callable[[V], Iterable[str | None]] | None = None) -> None:
    """Read-modify-write of one LXD object that loses no concurrent change: `write(current)` must send LXD the
    new state under `current.etag`. Writers in this gateway take turns on `key`; when a writer elsewhere changed
    the object in between (LXD's 412), or LXD was still busy with another update, it is read and written again.
    With `If-Match` the caller named the version to change: it is checked on every read, so a change in between is
    the caller's 412. `versions(current)` names the ETags a caller may hold for it (default: LXD's)."""
    async with _edit_lock(key):
        for attempt in range(EDIT_ATTEMPTS):
            current = await read()
            check_if_match(if_match, versions(current) if versions is not None else current.etag, what)
            try:
                await write(current)
                return
            except LXDError as exc:
                if not isinstance(exc, PreconditionFailed) and not is_busy(exc):
                    raise
                if attempt == EDIT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
