"""The mirror of every remote: reads of mirrored collections served from memory, and what writes must tell it.

    lookup = await mirror.lookup(remote, project, "instances", "web1", live=no_cache)
    lookup.source      # hit: from the model in sync; miss: the project is being loaded; bypass: read live
    lookup.record      # None: no such object (404); .view(variant, make) renders what a caller may see

    mirror.touch(remote, project, "instances", "web1")   # a write through the gateway changed it: the next read
    data = await mirror.fresh(remote, project, "instances", "web1")  # waits for it to be read again

A remote whose model is not in sync (starting, events stream down, reloading) is read live, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.lxd.client import Client
from app.mirror.collection import Collection, Record
from app.mirror.kinds import MirrorKind, Shaped
from app.mirror.remote import ALL, PENDING_WAIT, RemoteMirror

HIT, MISS, BYPASS = "hit", "miss", "bypass"


@dataclass
class Lookup:
    """One object read through the mirror: `record` None when it does not exist."""

    record: Record | None
    source: str

    @property
    def age(self) -> int:
        return int(self.record.age) if self.record is not None and self.source == HIT else 0


@dataclass
class Listing:
    """A collection read through the mirror, sorted by key."""

    records: list[Record]
    source: str
    age: int


class Mirror:
    """The per-remote models, started for each remote on first use (or at start-up with `start`)."""

    def __init__(self, clients: Callable[[str], Client], kinds: Sequence[MirrorKind], *, enabled: bool = True,
                 reconcile: float = 60.0, max_projects: int = 32,
                 after_large_load: Callable[[], object] | None = None) -> None:
        self._clients = clients
        self.after_large_load = after_large_load
        self.kinds = {k.name: k for k in kinds}
        self.enabled = enabled
        self.reconcile = reconcile
        self.max_projects = max_projects
        self.remotes: dict[str, RemoteMirror] = {}

    def remote(self, name: str) -> RemoteMirror | None:
        if not self.enabled:
            return None
        rm = self.remotes.get(name)
        if rm is None:
            rm = self.remotes[name] = RemoteMirror(name, self._clients(name), list(self.kinds.values()),
                                                   reconcile=self.reconcile, max_projects=self.max_projects,
                                                   after_large_load=self.after_large_load)
            rm.start()
        return rm

    def start(self, names: Sequence[str]) -> None:
        for name in names:
            self.remote(name)

    async def drop(self, name: str) -> None:
        rm = self.remotes.pop(name, None)
        if rm is not None:
            await rm.aclose()

    async def aclose(self) -> None:
        for name in list(self.remotes):
            await self.drop(name)

    # -- reads ----------------------------------------------------------------------------------------------------

    def _collection(self, remote: str, project: str, kind: str) -> tuple[RemoteMirror | None, Collection | None]:
        rm = self.remote(remote)
        return rm, (rm.collection(project, kind) if rm is not None else None)

    async def lookup(self, remote: str, project: str, kind: str, key: str, *, client: Client,
                     live: bool = False) -> Lookup:
        """`key` of `kind`, from the model when it is in sync (`live` forces a read of LXD)."""
        rm, coll = self._collection(remote, project, kind)
        if coll is not None and rm is not None and not live and await rm.settle(coll, key) and rm.holds(
                project, kind, coll):
            rm.counters.served[HIT] += 1
            return Lookup(coll.records.get(key), HIT)
        source = BYPASS if live or rm is None or not rm.synced or coll is not None else MISS
        if rm is not None:
            rm.counters.served[source] += 1
        seq = rm.next_seq() if rm is not None else 0
        fetched = time.monotonic()
        data = await self.kinds[kind].load_one(client, remote, key)
        if coll is not None and rm is not None and rm.synced:
            coll.put(key, data, fetched, seq)
            rec = coll.records.get(key)
            if rec is not None and rec.data == data:
                return Lookup(rec, source)
        return Lookup(Record(data, fetched, seq, 0) if data is not None else None, source)

    async def listing(self, remote: str, project: str, kind: str, *, client: Client,
                      live: bool = False) -> Listing:
        """Every object of `kind` in `project`, sorted by key."""
        rm, coll = self._collection(remote, project, kind)
        if coll is not None and rm is not None and not live and await rm.settle(coll) and rm.holds(
                project, kind, coll):
            rm.counters.served[HIT] += 1
            recs = coll.sorted_records()
            age = int(time.monotonic() - min((r.fetched for r in recs), default=time.monotonic()))
            return Listing(recs, HIT, age)
        source = BYPASS if live or rm is None or not rm.synced or coll is not None else MISS
        if rm is not None:
            rm.counters.served[source] += 1
        seq = rm.next_seq() if rm is not None else 0
        fetched = time.monotonic()
        items = await self.kinds[kind].load_all(client, remote)
        if coll is not None and rm is not None and rm.synced:
            coll.replace_all(items, fetched, seq)
        return Listing([Record(d, fetched, seq, 0) for _, d in sorted(items, key=lambda kv: kv[0])], source, 0)

    def has_project(self, remote: str, project: str) -> bool | None:
        """Whether the remote has `project`: True/False from a model in sync, None when unknown."""
        rm = self.remote(remote)
        return rm.has_project(project) if rm is not None else None

    # -- writes ---------------------------------------------------------------------------------------------------

    def touch(self, remote: str, project: str, kind: str, *keys: str, lazy: bool = False) -> list[asyncio.Future[None]]:
        """A write through the gateway changed these objects (no keys: the whole collection): readers wait until
        each has been read again. `lazy` (a whole collection changed as a side effect): it is read when a reader
        next asks for it, or at once while somebody watches it."""
        rm = self.remotes.get(remote)
        if rm is None:
            return []
        futs = [rm.request(project, kind, key, lazy=lazy) for key in (keys or (ALL,))]
        return [f for f in futs if f is not None]

    async def fresh(self, remote: str, project: str, kind: str, key: str, *, client: Client) -> Shaped | None:
        """`key` as LXD has it now, read once and applied to the model (a job's result after its write): a copy,
        the caller's to change. The kind's quick read serves (an instance without its state: what changed with the
        job is in its definition and status; its addresses follow in the background)."""
        rm, coll = self._collection(remote, project, kind)
        if coll is None or rm is None:
            return await self.kinds[kind].load_one(client, remote, key)
        fut = rm.request(project, kind, key, definition=True)
        try:
            if fut is not None:
                async with asyncio.timeout(10):  # (asyncio.wait_for in 3.11 may swallow a cancel)
                    await asyncio.shield(fut)
        except TimeoutError:  # the model is too busy: the job's answer does not wait for it
            return await self.kinds[kind].load_one(client, remote, key)
        rec = coll.records.get(key)
        return copy.deepcopy(rec.data) if rec is not None else None

    def mark(self, remote: str) -> int:
        """A point in the order of the model's reads of `remote`: `after_change(since=)` takes only a record read
        after it. Taken before a job sends LXD the request of its change."""
        rm = self.remotes.get(remote)
        return rm.next_seq() if rm is not None else 0

    async def after_change(self, remote: str, project: str, kind: str, key: str, *, client: Client, since: int,
                           shows: Callable[[Shaped], bool]) -> Shaped | None:
        """`key` once a change LXD has finished (a job's last operation) is in the model: a copy, the caller's to
        change. LXD announces the change with a lifecycle event before it ends the operation, and the model reads
        the object on that event: the read under way is waited for (not the confirming one the operation's own
        event queues after it), then the record is taken when it was read after the job's request (`since`, from
        `mark`) and `shows` the change (a container's new status). Otherwise (the event is late, the model not in
        sync) it is read afresh (`fresh`)."""
        rm, coll = self._collection(remote, project, kind)
        if coll is None or rm is None or not rm.holds(project, kind, coll):
            return await self.fresh(remote, project, kind, key, client=client)
        under_way = coll.pending.get(key)
        if under_way is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PENDING_WAIT):
                    await asyncio.shield(under_way)
        rec = coll.records.get(key)
        if rec is not None and rec.seq > since and rm.holds(project, kind, coll) and shows(rec.data):
            rm.counters.served[HIT] += 1
            return copy.deepcopy(rec.data)
        return await self.fresh(remote, project, kind, key, client=client)

    # -- watching -------------------------------------------------------------------------------------------------

    async def ready(self, remote: str, project: str, kind: str, *, timeout: float = 10.0) -> Collection:
        """The collection once the remote's model is in sync and holds it (waiting up to `timeout`, then
        `TimeoutError`), with the reads it was told of applied: what a watcher starts from."""
        deadline = time.monotonic() + timeout
        while True:
            rm, coll = self._collection(remote, project, kind)
            if coll is not None and rm is not None:
                await rm.settle(coll)
                if rm.holds(project, kind, coll):
                    return coll
            if rm is None or time.monotonic() > deadline:
                raise TimeoutError(f"the model of remote {remote!r} is not in sync")
            await asyncio.sleep(0.05)

    def stats(self) -> dict[str, dict[str, object]]:
        return {name: {"state": rm.state, "synced": rm.synced, "objects": rm.size, "projects": list(rm.projects),
                       "events": rm.counters.events, "reads": rm.counters.reads,
                       "listings": rm.counters.listings, "reloads": rm.counters.reloads, "gaps": rm.counters.gaps,
                       "member_polls": rm.counters.member_polls, "member_changes": rm.counters.member_changes,
                       "served": dict(rm.counters.served), "error": rm.last_error}
                for name, rm in self.remotes.items()}
