"""`Idempotency-Key`: the same request sent again returns the job of the first one, never a second job.

Keys are scoped to (caller, key). The request's fingerprint covers the method, the path, the query without `wait`
(sorted), and the canonical JSON body (sorted keys, no whitespace); for uploads, the client's `Content-SHA256` header
stands for the body. Within the retention (24 h) the same key with the same fingerprint answers the first job; a
different fingerprint is a conflict. A replay that arrives while the first request is still being accepted waits
for it and answers the same job; if the first request is refused before any job exists, the key is free again.
On a store shared by several gateway processes, a replay that reaches another process polls the store until the
first request's job is recorded (or its key released).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from app.jobs.store import JobStore

DEFAULT_TTL = 24 * 3600.0
OTHER_OWNER_POLL = 0.05
OTHER_OWNER_POLL_MAX = 0.5
"""Seconds between looks at a key another gateway process reserved (a shared store), growing to the maximum."""


def fingerprint(method: str, path: str, query: Iterable[tuple[str, str]], body: bytes | None = None, *,
                content_sha256: str | None = None) -> str:
    """The fingerprint of a request (hex sha256)."""
    items = sorted((k, v) for k, v in query if k != "wait")
    if content_sha256:
        body_part = "sha256:" + content_sha256.strip().lower()
    elif body:
        try:
            canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            body_part = "json:" + hashlib.sha256(canonical.encode()).hexdigest()
        except (ValueError, UnicodeDecodeError):
            body_part = "raw:" + hashlib.sha256(body).hexdigest()
    else:
        body_part = "empty"
    doc = json.dumps([method.upper(), path, items, body_part], separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


class IdempotencyConflict(Exception):
    """The key was used for a different request."""


@dataclass(frozen=True)
class Reservation:
    """This request owns the key: start the job, then `complete()` (or `release()` when refused)."""

    scope: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Replay:
    """The key was used for the same request: answer this job."""

    job_id: str


class Idempotency:
    """Reserve keys; make concurrent replays wait for the first request."""

    def __init__(self, store: JobStore, *, owner_id: str, ttl: float = DEFAULT_TTL) -> None:
        self._store = store
        self._owner_id = owner_id
        self.ttl = ttl
        self._pending: dict[tuple[str, str], tuple[str, asyncio.Future[str | None]]] = {}

    async def begin(self, scope: str, key: str, fp: str) -> Reservation | Replay:
        """Reserve (scope, key) for a request with fingerprint `fp`, or find the job it already started.

        Raises `IdempotencyConflict` when the key belongs to a different request.
        """
        poll = OTHER_OWNER_POLL
        while True:
            pending = self._pending.get((scope, key))
            if pending is not None:
                pending_fp, future = pending
                if pending_fp != fp:
                    raise IdempotencyConflict(key)
                job_id = await asyncio.shield(future)
                if job_id is not None:
                    return Replay(job_id)
                continue  # the first request was refused: try to own the key
            future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._pending[(scope, key)] = (fp, future)
            try:
                record, created = await self._store.idempotency_reserve(
                    scope, key, fp, owner_id=self._owner_id, now=time.time(), ttl=self.ttl)
            except BaseException:
                self._settle(scope, key, None)
                raise
            if created:
                return Reservation(scope, key, fp)
            self._settle(scope, key, record.job_id)
            if record.fingerprint != fp:
                raise IdempotencyConflict(key)
            if record.job_id is not None:
                return Replay(record.job_id)
            if record.owner_id != self._owner_id:
                # Another live gateway process sharing the store is accepting the first request: wait for its job
                # (the store gives the key to this one once that process's heartbeat runs out).
                await asyncio.sleep(poll)
                poll = min(poll * 2, OTHER_OWNER_POLL_MAX)
                continue
            # Ours, without a job, and no request of ours holds it: a refused request whose release could not be
            # written (e.g. on a full disk). Free it and try again.
            await self._store.idempotency_release(scope, key)

    async def complete(self, reservation: Reservation, job_id: str) -> None:
        try:
            await self._store.idempotency_complete(reservation.scope, reservation.key, job_id)
        finally:
            self._settle(reservation.scope, reservation.key, job_id)

    async def release(self, reservation: Reservation) -> None:
        """The request was refused before a job existed: free the key."""
        try:
            await self._store.idempotency_release(reservation.scope, reservation.key)
        finally:
            self._settle(reservation.scope, reservation.key, None)

    def _settle(self, scope: str, key: str, job_id: str | None) -> None:
        pending = self._pending.pop((scope, key), None)
        if pending is not None and not pending[1].done():
            pending[1].set_result(job_id)
