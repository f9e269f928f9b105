"""One mirrored collection (the instances of one project, say): its records, versions and watchers. Pure: no I/O.

Every change bumps the remote's version counter; the collection keeps the last `HISTORY` changes so that a
watcher can resume from a version (older than that, it gets a `resync`, as Kubernetes answers 410).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.mirror.kinds import Shaped

HISTORY = 1024
WATCH_QUEUE = 4096
GONE = 4096  # deleted keys remembered with the read that saw them gone


def etag_of(body: bytes) -> str:
    """The gateway's ETag of an answer: a digest of its whole body (quoted, strong)."""
    return '"g' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def render(data: Any) -> tuple[bytes, str]:
    """The JSON body of an answer and its ETag."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return body, etag_of(body)


def stable_digest(data: Any) -> str:
    """A short digest of `data` (the part of an answer a write can change)."""
    return hashlib.blake2b(json.dumps(data, separators=(",", ":"), sort_keys=True).encode(),
                           digest_size=8).hexdigest()


def stable_part(etag: str) -> str:
    """`"g<answer>.<stable>"` -> `"<stable>"`: an `If-Match` is checked against what a write can change, so that a
    status or an address that changed since the read does not fail a write; other ETags as they are."""
    bare = etag.strip().removeprefix("W/").strip('"')
    return f'"{bare.rsplit(".", 1)[1]}"' if bare.startswith("g") and "." in bare else etag


class Versions:
    """A remote's change counter. It starts at a random point of a 62-bit range, so a version handed out by another
    gateway process (an earlier one, or another replica) falls outside this one's few versions and a resume from it
    gets a resync, whatever the clock did in between."""

    def __init__(self) -> None:
        self.current = secrets.randbelow(1 << 52) << 10

    def next(self) -> int:
        self.current += 1
        return self.current


class Record:
    """One object as last read from LXD, with its rendered bodies (one per view a caller may get)."""

    __slots__ = ("_views", "data", "fetched", "seq", "version")

    def __init__(self, data: Shaped, fetched: float, seq: int, version: int) -> None:
        self.data = data
        self.fetched = fetched  # time.monotonic() of the read that gave it
        self.seq = seq  # the order in which that read was started: a read started earlier never replaces it
        self.version = version
        self._views: dict[str, tuple[Shaped, bytes, str]] | None = None

    def view(self, variant: str, make: Callable[[Shaped], Shaped] | None,
             stable: Callable[[Shaped], Any] | None = None) -> tuple[Shaped, bytes, str]:
        """The object as shown to callers of `variant` (`make` derives it; None: the object itself), rendered,
        with its ETag: with `stable`, `"<digest of the answer>.<digest of stable(answer)>"`, the second part
        naming only what a write can change (see `stable_part`)."""
        views = self._views
        if views is None:
            views = self._views = {}
        got = views.get(variant)
        if got is None:
            data = self.data if make is None else make(self.data)
            if variant and data == self.data:
                got = self.view("", None, stable)
            else:
                body, etag = render(data)
                if stable is not None:
                    etag = etag[:-1] + "." + stable_digest(stable(data)) + '"'
                got = (data, body, etag)
            views[variant] = got
        return got

    @property
    def age(self) -> float:
        return time.monotonic() - self.fetched


@dataclass(frozen=True)
class Change:
    """One change of a collection, as a watcher gets it."""

    version: int
    type: str  # added | modified | deleted | resync | end
    key: str
    data: Shaped | None


class Watcher:
    """A bounded queue of changes; when it overflows the watcher is told to resync."""

    def __init__(self, coll: Collection) -> None:
        self._coll = coll
        self.queue: asyncio.Queue[Change] = asyncio.Queue(WATCH_QUEUE)
        self.overflowed = False

    def put(self, change: Change) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:  # too far behind: what it missed is in the full list it gets instead
            self.overflowed = True
            self._only(Change(change.version, "resync", "", None))

    def _only(self, change: Change) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(change)

    def end(self) -> None:
        """The collection is no longer kept (its project was dropped): the watcher's stream ends, and a client that
        reconnects resumes from a fresh collection (a resync)."""
        self.overflowed = True
        self._only(Change(self._coll.version, "end", "", None))

    def close(self) -> None:
        self._coll.watchers.discard(self)


class Collection:
    """The records of one kind in one project."""

    def __init__(self, versions: Versions) -> None:
        self._versions = versions
        self.records: dict[str, Record] = {}
        self.gone: OrderedDict[str, int] = OrderedDict()
        """Keys seen gone, with the `seq` of that read: a read of one started before it does not bring it back
        (the last `GONE` of them; a read in flight for longer than that many deletes is not expected)."""
        self.loaded = False
        self.loaded_at = 0.0
        self.used = time.monotonic()
        self.history: deque[Change] = deque(maxlen=HISTORY)
        self.watchers: set[Watcher] = set()
        self.pending: dict[str, asyncio.Future[None]] = {}
        """Keys with a read under way that a reader must wait for (an event or a write said they changed)."""
        self._sorted: tuple[int, list[Record]] | None = None
        self.queued: dict[str, asyncio.Future[None]] = {}
        self.stale = False
        """A lazy request (see `RemoteMirror.request`) left the whole collection to be listed before its next read."""
        self.full: set[str] = set()
        """Keys whose next read must be a full one (something may have changed beyond their definition)."""
        """Keys with one more read to start after the one under way (told of a change while it ran)."""
        self.version = self.floor = versions.next()
        """`floor`: changes up to this version are no longer kept (a resume from before it gets a resync)."""

    def __len__(self) -> int:
        return len(self.records)

    def _emit(self, type_: str, key: str, data: Shaped | None) -> None:
        self.version = self._versions.next()
        change = Change(self.version, type_, key, data)
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0].version
        self.history.append(change)
        for w in list(self.watchers):
            w.put(change)

    def put(self, key: str, data: Shaped | None, fetched: float, seq: int) -> bool:
        """Apply one read of `key` (None: it is gone) started as number `seq`; False when a later-started read was
        applied already (this one may be older)."""
        rec = self.records.get(key)
        if rec is not None and rec.seq > seq:
            return False
        gone = self.gone.get(key)
        if gone is not None and gone > seq:
            return False
        if data is None:
            self.gone[key] = seq
            self.gone.move_to_end(key)
            while len(self.gone) > GONE:
                self.gone.popitem(last=False)
            if rec is not None:
                del self.records[key]
                self._emit("deleted", key, rec.data)
            return True
        if gone is not None:
            del self.gone[key]
        if rec is not None and rec.data == data:
            rec.fetched, rec.seq = fetched, seq
            return True
        self._emit("added" if rec is None else "modified", key, data)
        self.records[key] = Record(data, fetched, seq, self.version)
        return True

    def replace_all(self, items: list[tuple[str, Shaped]], fetched: float, seq: int) -> None:
        """Apply a full listing started as number `seq`: what it lacks is gone (unless read later than it)."""
        seen = set()
        for key, data in items:
            seen.add(key)
            self.put(key, data, fetched, seq)
        for key in [k for k, r in self.records.items() if k not in seen and r.seq < seq]:
            self.put(key, None, fetched, seq)
        self.loaded = True
        self.loaded_at = fetched

    def watch(self, since: int | None) -> tuple[Watcher, list[Change] | None]:
        """A watcher of changes after version `since`, and those changes it missed; None when `since` is older
        than the history kept (the caller sends a resync)."""
        w = Watcher(self)
        self.watchers.add(w)
        if since is None:
            return w, []
        if since < self.floor or since > self._versions.current:
            return w, None
        return w, [c for c in self.history if c.version > since]

    def items(self) -> Iterator[tuple[str, Record]]:
        return iter(self.records.items())

    def sorted_records(self) -> list[Record]:
        """The records sorted by key (kept until the next change)."""
        if self._sorted is None or self._sorted[0] != self.version:
            self._sorted = (self.version, [self.records[k] for k in sorted(self.records)])
        return self._sorted[1]
