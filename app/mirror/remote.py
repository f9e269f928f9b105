"""The mirror of one remote: kept in sync from its all-projects events stream.

How it stays right:
- **Subscribed before loaded.** The listener is on the stream before any listing is asked for, so an event that
  comes while a listing runs is applied after it (a read is never replaced by one started earlier: `seq`).
- **Kept current by events.** Every `lifecycle` event about a mirrored object, and every finished `operation`
  naming one, has the object read again (one read at a time per object; a reader of it waits for that read, up to
  `PENDING_WAIT`). What LXD 5.0 sends, as seen on a real daemon: `instance-created/-started/-stopped/-updated/
  -renamed` (after the rename operation ends; `context.old_name`), `-deleted`, `-paused/-resumed` (freeze, and
  around a snapshot), `-snapshot-*`, `-exec`; a profile change sends `instance-updated` for each instance using it
  before `profile-updated`; `image-*` and `image-alias-created/-deleted` (the alias's target in `context`);
  `project-*`. A container that powers itself off sends `instance-shutdown` or `instance-stopped`.
- **Addresses.** A DHCP lease (or SLAAC) brings no event at all. An instance seen to start running, or running
  without an IPv4 address, is read again every `ADDRESS_POLL` seconds for `ADDRESS_WINDOW` seconds, until it has
  one; after that the periodic reconcile catches later changes.
- **Cluster members.** On a clustered remote the members' statuses are read every `MEMBER_POLL` seconds while the
  model is in sync (one `GET /1.0/cluster/members?recursion=1`), and once more right after the stream reconnects
  (before the reload); when one changes (`Online` -> `Offline` or `Evacuated`, or back) every collection that
  depends on members (`MirrorKind.per_member`: instances) is reloaded in full, then listed again (quietly) at each
  poll for `MEMBER_SETTLE` seconds. What LXD 5.0 does here, as seen on a real 3-member cluster: no event at all
  when a member dies or comes back. From the death on, its listing (`recursion=2`) answers at once (tens of ms),
  showing each instance of the member with status `Error` and its location only (a single read of one waits 10 s,
  then fails "Missing event connection with target cluster member"); the member turns `Offline` in the members'
  list (message "No heartbeat for ...") 10-20 s after its death; once restarted it is `Online` within a few
  seconds, and the listing shows its instances `Running` again from then on. The members' list answers in about
  10 ms, dead member or not. A standalone remote is never polled (checked once, from the server's facts). A poll
  that fails is logged and tried again at the next interval; it never takes the model out of sync.
- **Reloaded in full** after the stream dropped (events may have been missed): until then, and until the first
  load, the remote is not in sync and reads go to LXD.
- **Reconciled** by a full listing of every mirrored collection each `reconcile` seconds.
- **Bounded.** Projects other than the preloaded ones are mirrored on first use, at most `max_projects` of them
  (the least recently used is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.lxd.client import Client
from app.lxd.events import Listener
from app.lxd.models import Event
from app.mirror.collection import Collection, Versions
from app.mirror.kinds import MirrorKind, Shaped

log = logging.getLogger("app.mirror")

ADDRESS_WINDOW = 60.0
ADDRESS_POLL = 0.5
PENDING_WAIT = 2.0
LARGE_LOAD = 200  # objects in one listing: after applying one this large, `after_large_load` is called
MEMBER_POLL = 3.0
"""Seconds between two reads of a clustered remote's members while its model is in sync."""
MEMBER_POLL_TIMEOUT = 5.0
MEMBER_SETTLE = 30.0
"""Seconds after a member's status changed during which each poll also lists what depends on members again
(quietly, readers do not wait): a guard for a member LXD marks online before it has its event connection to it
again (single reads then still fail "Missing event connection"); its instances' status then shows within a poll."""
FETCHES = 16  # reads of single objects in flight at once, per remote
ALL = "*"  # the key of a whole-collection reload
SILENT_ACTIONS = frozenset({"instance-exec", "instance-console", "instance-console-reset",
                            "instance-console-retrieved", "instance-log-retrieved", "instance-file-retrieved",
                            "instance-file-pushed", "instance-file-deleted"})
"""Lifecycle actions that change nothing the model keeps (reading them again would only cost LXD)."""


@dataclass
class Counters:
    events: int = 0
    reads: int = 0
    listings: int = 0
    reloads: int = 0
    gaps: int = 0
    evicted: int = 0
    member_polls: int = 0
    member_changes: int = 0
    served: dict[str, int] = field(default_factory=lambda: {"hit": 0, "miss": 0, "bypass": 0})


def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class RemoteMirror:
    """The mirrored projects of one remote, and the task keeping them in sync."""

    def __init__(self, name: str, client: Client, kinds: Sequence[MirrorKind], *, reconcile: float = 60.0,
                 max_projects: int = 32, preload: Sequence[str] = ("default",),
                 after_large_load: Callable[[], object] | None = None) -> None:
        self.name = name
        self.after_large_load = after_large_load
        """Called after a listing of at least `LARGE_LOAD` objects was applied (the server returns the memory its
        parsing took for a moment: `app.footprint.return_free_heap`)."""
        self.client = client
        self.kinds = {k.name: k for k in kinds}
        self.reconcile = reconcile
        self.max_projects = max(1, max_projects)
        self.preload = tuple(preload)
        self.versions = Versions()
        self.projects: OrderedDict[str, dict[str, Collection]] = OrderedDict()
        self.project_names: set[str] | None = None
        self._project_events: list[tuple[str, str, str]] | None = None  # told while the projects are listed
        self.synced = False
        self.state = "starting"
        self.synced_since = 0.0
        self.counters = Counters()
        self._seq = 0
        self._clients: dict[str, Client] = {}
        self._quiet: set[tuple[str, str, str]] = set()
        self._expired: set[tuple[str, str, str]] = set()  # address windows that ran out (until the next start)
        self._reconciling = False
        self._fetches = asyncio.Semaphore(FETCHES)
        self._addresses: dict[tuple[str, str, str], float] = {}
        self._gap = asyncio.Event()
        self._wake = asyncio.Event()  # an object started to await addresses
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.last_error: str | None = None
        self.clustered: bool | None = None  # None: not known yet
        self.members: dict[str, str] | None = None  # each member's status, as last read
        self._polling_members = False
        self._members_failing = False  # the last read of the members failed (the next failures log at debug)
        self._members_settle = 0.0  # until then, every poll lists what depends on members again

    # -- life -----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mirror-{self.name}")

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def project_client(self, project: str) -> Client:
        c = self._clients.get(project)
        if c is None:
            c = self._clients[project] = self.client if project == self.client.project else \
                self.client.with_project(project)
        return c

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _unsync(self, state: str, why: str | None = None) -> None:
        if self.synced:
            log.info("the model of remote %r is out of sync (%s)", self.name, why or state)
        self.synced = False
        self.state = state
        if why:
            self.last_error = why

    async def _run(self) -> None:
        bus = self.client.events.bus(all_projects=True)
        delay = 0.2
        while not self._closed:
            self._gap = asyncio.Event()
            listener: Listener = bus.listen(self._on_event, self._on_gap)
            try:
                if not await bus.ensure_connected(10.0):
                    self._unsync("down", f"events stream: {bus.last_error}")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self.state = "reloading" if self.counters.reloads else "starting"
                await self._take_members()
                await self._load_everything()
                if self._gap.is_set():
                    continue
                delay = 0.2
                self.synced, self.state, self.synced_since = True, "synced", time.monotonic()
                self.last_error = None
                await self._keep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # LXD went away mid-load: try again from the start
                self._unsync("down", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                listener.close()

    async def _keep(self) -> None:
        """Until the stream drops: poll instances awaiting addresses and a cluster's members, reconcile every
        `reconcile` seconds."""
        next_reconcile = time.monotonic() + self.reconcile
        next_members = time.monotonic() + MEMBER_POLL
        while not self._gap.is_set():
            self._wake.clear()
            waits = [asyncio.ensure_future(self._gap.wait())]
            if not self._addresses:
                waits.append(asyncio.ensure_future(self._wake.wait()))
            timeout = ADDRESS_POLL if self._addresses else next_reconcile - time.monotonic()
            if self.clustered is not False:
                timeout = min(timeout, next_members - time.monotonic())
            try:
                await asyncio.wait(waits, timeout=max(0.05, timeout), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if self._gap.is_set():
                return
            self._poll_addresses()
            now = time.monotonic()
            if self.clustered is not False and now >= next_members:
                next_members = now + MEMBER_POLL
                if not self._polling_members:
                    self._polling_members = True
                    self._spawn(self._poll_members(self._gap))
            if now >= next_reconcile and not self._reconciling:
                next_reconcile = now + self.reconcile
                self._spawn(self._reconcile())

    async def _reconcile(self) -> None:
        """Full listings of every mirrored collection, one after the other, in the background: readers do not wait
        for them (nothing told of a change)."""
        self._reconciling = True
        try:
            for project, colls in list(self.projects.items()):
                for kind, coll in list(colls.items()):
                    if self.projects.get(project) is colls:
                        await self._read_once(project, kind, ALL, coll)
        finally:
            self._reconciling = False

    async def _load_everything(self) -> None:
        self.counters.reloads += 1
        # A project made or deleted while LXD's answer is on its way is told by an event the listing may predate:
        # those events are applied again over the listing.
        self._project_events = []
        try:
            names = set(await self.client.projects.names())
            for action, name, old in self._project_events:
                self._apply_project_event(names, action, name, old)
        finally:
            self._project_events = None
        self.project_names = names
        for project in self.preload:
            if project in self.project_names:
                self._collections(project)
        loads = [self._load(project, kind) for project, colls in self.projects.items() for kind in colls]
        await asyncio.gather(*loads)

    async def _load(self, project: str, kind: str) -> None:
        colls = self.projects.get(project)
        if colls is None:
            return
        coll = colls[kind]
        seq = self.next_seq()
        fetched = time.monotonic()
        items = await self.kinds[kind].load_all(self.project_client(project), self.name)
        self.counters.listings += 1
        if self.projects.get(project) is colls:
            before = {k: r.data for k, r in coll.items()}
            coll.replace_all(items, fetched, seq)
            for key, rec in coll.items():
                self._track_address(project, kind, key, before.get(key), rec.data)

    # -- events ---------------------------------------------------------------------------------------------------

    def _on_gap(self) -> None:
        self.counters.gaps += 1
        self._unsync("reloading", "the events stream dropped")
        self._gap.set()

    def _on_event(self, event: Event) -> None:
        self.counters.events += 1
        project = event.project or "default"
        if event.type == "lifecycle":
            parts = event.source
            if not parts:
                return
            if parts[0] == "projects" and len(parts) == 2:
                old = str((event.metadata.get("context") or {}).get("old_name") or "")
                if self._project_events is not None:
                    self._project_events.append((event.action, parts[1], old))
                if self.project_names is not None:
                    self._apply_project_event(self.project_names, event.action, parts[1], old)
                if event.action.endswith("-deleted"):
                    self._drop_project(parts[1])
                return
            if event.action in SILENT_ACTIONS:
                return
            changed_set = event.action.endswith(("-created", "-deleted", "-renamed", "-updated"))
            for kind in self.kinds.values():
                if parts[0] in kind.follows and changed_set:
                    self._request_in(kind, project, ALL, lazy=True)
                if kind.events_of != parts[0]:
                    continue
                if kind.whole or len(parts) < 2 or (parts[0] == "images" and parts[1] == "aliases"):
                    self._request_in(kind, project, ALL)
                    continue
                old = (event.metadata.get("context") or {}).get("old_name")
                if event.action.endswith("-renamed") and old:
                    self._request_in(kind, project, str(old))
                self._request_in(kind, project, parts[1], definition=True)
        elif event.type == "operation":
            status = event.metadata.get("status_code")
            if not isinstance(status, int) or status < 200 or event.metadata.get("class") == "websocket":
                return  # only finished operations (lifecycle events tell of the changes on the way), and not
                # exec or console sessions (they change no object the model keeps)
            for collection, objects in event.resources.items():
                for kind in self.kinds.values():
                    if kind.events_of != collection:
                        continue
                    for parts in objects:  # what changed came with a lifecycle event: this read only confirms it
                        self._request_in(kind, project, ALL if kind.whole or len(parts) < 2 else parts[1],
                                         definition=True)

    def _request_in(self, kind: MirrorKind, project: str, key: str, *, quiet: bool = False,
                    definition: bool = False, lazy: bool = False) -> None:
        """Read `key` again in `project`, or in every mirrored project for a collection projects may share."""
        for p in list(self.projects) if kind.shared else [project]:
            self.request(p, kind.name, key, quiet=quiet, definition=definition, lazy=lazy)

    @staticmethod
    def _apply_project_event(names: set[str], action: str, name: str, old: str) -> None:
        if action.endswith("-deleted"):
            names.discard(name)
        elif action.endswith("-renamed"):
            names.discard(old)
            names.add(name)
        else:
            names.add(name)

    # -- reads of LXD, coalesced ----------------------------------------------------------------------------------

    def request(self, project: str, kind: str, key: str, *, quiet: bool = False, definition: bool = False,
                lazy: bool = False) -> asyncio.Future[None] | None:
        """Have `key` (or `ALL`) of `kind` in `project` read again; the future ends once a read that started after
        this request has been applied (readers of the key wait for it: `settle`). While a read is under way, one
        more is queued after it (the read under way may have started before the change), and every request made
        meanwhile shares the queued one. A `quiet` read (nothing said the object changed: an address poll, a
        follower's reload) is not waited for, and is skipped when any read of the key is under way or queued. A
        `definition` request (only the object's definition changed) may be served by the kind's cheaper read, unless
        a full one was asked for since the last read started. A `lazy` request of a whole collection nobody
        watches only marks it stale: its next reader has it listed (and waits for that); nobody reading it, LXD is
        not asked (a burst of creates would otherwise have the profiles and images listed after each)."""
        colls = self.projects.get(project)
        if colls is None or kind not in colls:
            return None
        coll = colls[kind]
        if lazy and key == ALL and not coll.watchers:
            coll.stale = True
            return None
        if not definition:
            coll.full.add(key)
        ident = (project, kind, key)
        if quiet:
            if key not in coll.pending and key not in coll.queued and ident not in self._quiet:
                self._quiet.add(ident)
                self._spawn(self._quietly(ident, coll))
            return None
        loop = asyncio.get_running_loop()
        if key in coll.pending:
            fut = coll.queued.get(key)
            if fut is None:
                fut = coll.queued[key] = loop.create_future()
            return fut
        fut = coll.pending[key] = loop.create_future()
        self._spawn(self._fetch(project, kind, key, coll))
        return fut

    async def _fetch(self, project: str, kind: str, key: str, coll: Collection) -> None:
        try:
            while True:
                ok = await self._read_once(project, kind, key, coll)
                _resolve(coll.pending.pop(key, None))
                queued = coll.queued.pop(key, None)
                if queued is None:
                    return
                if not ok:  # the collection is reloaded in full: nothing to read one by one
                    _resolve(queued)
                    return
                coll.pending[key] = queued
        finally:  # cancelled (closing): nobody may wait for these any more
            _resolve(coll.pending.pop(key, None))
            _resolve(coll.queued.pop(key, None))

    async def _quietly(self, ident: tuple[str, str, str], coll: Collection, *, full: bool = True) -> None:
        try:
            if full:
                coll.full.add(ident[2])
            await self._read_once(*ident, coll)
        finally:
            self._quiet.discard(ident)

    async def _read_once(self, project: str, kind_name: str, key: str, coll: Collection) -> bool:
        """Read `key` (or the whole collection) of `kind` from LXD and apply it; False when it could not be read:
        then the collection counts as not loaded (reads go to LXD) until a full reload succeeds."""
        kind = self.kinds[kind_name]
        client = self.project_client(project)
        try:
            async with self._fetches:
                seq = self.next_seq()
                fetched = time.monotonic()
                full = key in coll.full
                coll.full.discard(key)
                partial = False
                if key == ALL:
                    coll.stale = False  # this listing covers what made it stale
                    items = await kind.load_all(client, self.name)
                    self.counters.listings += 1
                elif not full and kind.load_definition is not None:
                    data = await kind.load_definition(client, self.name, key)
                    partial = True
                    self.counters.reads += 1
                else:
                    data = await kind.load_one(client, self.name, key)
                    self.counters.reads += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever went wrong, the record may be stale now: never serve it as in sync
            log.info("model of %s/%s %s: reading %r failed: %s", self.name, project, kind_name, key, exc)
            coll.loaded = False
            self._spawn(self._reload_later(project, kind_name))
            return False
        if key == ALL:
            before = {k: r.data for k, r in coll.items()}
            coll.replace_all(items, fetched, seq)
            for k, rec in coll.items():
                self._track_address(project, kind_name, k, before.get(k), rec.data)
            if len(items) >= LARGE_LOAD and self.after_large_load is not None:
                del before, items  # off the loop's thread: it may take milliseconds, and holds no GIL
                self._spawn(asyncio.to_thread(self.after_large_load))
        else:
            prev = coll.records.get(key)  # as it is now, when the answer is applied
            complete = True
            if partial and data is not None and kind.keep_state is not None:
                data, complete = kind.keep_state(data, prev.data if prev is not None else None)
            coll.put(key, data, fetched, seq)
            self._track_address(project, kind_name, key, prev.data if prev else None, data)
            ident = (project, kind_name, key)
            if not complete and ident not in self._quiet:  # the rest (an instance's state) in the background
                self._quiet.add(ident)
                self._spawn(self._quietly(ident, coll, full=True))
        return True

    async def _reload_later(self, project: str, kind: str) -> None:
        await asyncio.sleep(0.5)
        if not self._closed:
            fut = self.request(project, kind, ALL)
            if fut is not None:
                with contextlib.suppress(Exception):
                    await fut

    # -- cluster members ------------------------------------------------------------------------------------------

    async def _read_members(self) -> dict[str, str] | None:
        """Each member's status; None when the members could not be read (logged)."""
        try:
            async with asyncio.timeout(MEMBER_POLL_TIMEOUT):  # (asyncio.wait_for in 3.11 may swallow a cancel)
                members = await self.client.cluster.members()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # TimeoutError, LXD unreachable: the next poll tries again
            log.log(logging.DEBUG if self._members_failing else logging.INFO,
                    "model of %s: reading the cluster members failed: %s", self.name, f"{type(exc).__name__}: {exc}")
            self._members_failing = True
            return None
        self._members_failing = False
        self.counters.member_polls += 1
        return {m.server_name: m.status for m in members}

    async def _is_clustered(self) -> bool:
        """Whether the remote is a cluster: asked once (from the server's facts), again while unknown."""
        if self.clustered is None:
            try:
                async with asyncio.timeout(MEMBER_POLL_TIMEOUT):
                    self.clustered = await self.client.server.clustered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # asked again at the next poll
                log.log(logging.DEBUG if self._members_failing else logging.INFO,
                        "model of %s: the server's facts could not be read: %s", self.name, exc)
                self._members_failing = True
                return False
        return self.clustered

    async def _take_members(self) -> None:
        """Before a (re)load: the members' statuses as they are before the listings (a change after this is seen
        by the next poll)."""
        if await self._is_clustered():
            members = await self._read_members()
            if members is not None:
                self.members = members

    async def _poll_members(self, gap: asyncio.Event) -> None:
        """Read the members' statuses; when one changed since the last read, reload what depends on members."""
        try:
            if not await self._is_clustered():
                return
            members = await self._read_members()
            if members is None or gap.is_set():  # a reload follows the gap, with its own first read
                return
            before, self.members = self.members, members
            if before == members:
                if time.monotonic() < self._members_settle:
                    self.reload_per_member(quiet=True)
                return
            changed = sorted(n for n in (before or {}).keys() | members.keys()
                             if (before or {}).get(n) != members.get(n))
            log.info("model of %s: cluster members changed (%s): reloading what depends on them", self.name,
                     ", ".join(f"{n} {(before or {}).get(n, '-')} -> {members.get(n, '-')}" for n in changed))
            self.counters.member_changes += 1
            self._members_settle = time.monotonic() + MEMBER_SETTLE
            self.reload_per_member()
        finally:
            self._polling_members = False

    def reload_per_member(self, *, quiet: bool = False) -> None:
        """Have every mirrored collection that depends on cluster members listed again (readers wait for it, unless
        `quiet`)."""
        for project in list(self.projects):
            for kind in self.kinds.values():
                if kind.per_member:
                    self.request(project, kind.name, ALL, quiet=quiet)

    # -- addresses ------------------------------------------------------------------------------------------------

    def _track_address(self, project: str, kind_name: str, key: str, before: Shaped | None,
                       after: Shaped | None) -> None:
        kind = self.kinds[kind_name]
        if kind.awaits_address is None or kind.running is None:
            return
        ident = (project, kind_name, key)
        if after is None or not kind.running(after):
            self._addresses.pop(ident, None)
            self._expired.discard(ident)
            return
        started = before is None or not kind.running(before)
        if started:
            self._expired.discard(ident)
        if kind.awaits_address(after):
            if started or (ident not in self._addresses and ident not in self._expired):
                self._addresses[ident] = time.monotonic() + ADDRESS_WINDOW
                self._wake.set()
        else:
            self._addresses.pop(ident, None)

    def _poll_addresses(self) -> None:
        now = time.monotonic()
        for ident, until in list(self._addresses.items()):
            if now > until:  # no address within the window: the reconcile keeps looking, not this poll
                del self._addresses[ident]
                self._expired.add(ident)
                continue
            self.request(*ident, quiet=True)

    # -- projects -------------------------------------------------------------------------------------------------

    def _collections(self, project: str) -> dict[str, Collection]:
        colls = self.projects.get(project)
        if colls is None:
            colls = self.projects[project] = {k: Collection(self.versions) for k in self.kinds}
            while len(self.projects) > self.max_projects:
                victim = next((p for p, cs in self.projects.items() if p not in self.preload and p != project
                               and not any(c.watchers for c in cs.values())), None)
                if victim is None:
                    break
                self._drop_project(victim)
                self.counters.evicted += 1
        else:
            self.projects.move_to_end(project)
        return colls

    def _drop_project(self, project: str) -> None:
        colls = self.projects.pop(project, None)
        for coll in (colls or {}).values():
            for w in list(coll.watchers):
                w.end()
        self._clients.pop(project, None)
        for ident in [i for i in self._addresses if i[0] == project]:
            del self._addresses[ident]

    def collection(self, project: str, kind: str) -> Collection | None:
        """The collection when the remote is in sync and the project is mirrored (loading it when it is not yet:
        None until it is loaded)."""
        if not self.synced:
            return None
        if self.project_names is not None and project not in self.project_names:
            return None
        colls = self.projects.get(project)
        if colls is None:
            colls = self._collections(project)
            for k in colls:
                self.request(project, k, ALL)
            return None
        self.projects.move_to_end(project)
        coll = colls[kind]
        return coll if coll.loaded else None

    def holds(self, project: str, kind: str, coll: Collection) -> bool:
        """Whether `coll` is still the loaded `kind` of `project` (not dropped, not being reloaded after a failed
        read) and the remote in sync."""
        colls = self.projects.get(project)
        return self.synced and colls is not None and colls.get(kind) is coll and coll.loaded

    def has_project(self, project: str) -> bool | None:
        """Whether LXD has the project; None when the mirror does not know (not in sync)."""
        if not self.synced or self.project_names is None:
            return None
        return project in self.project_names

    async def settle(self, coll: Collection, key: str | None = None) -> bool:
        """Wait for the reads under way that readers of `key` (all keys when None) must see; False when they did
        not end within `PENDING_WAIT` seconds. A stale collection (see `request`) is listed first."""
        if coll.stale:
            coll.stale = False
            for project, colls in self.projects.items():
                for kind, c in colls.items():
                    if c is coll:
                        self.request(project, kind, ALL)
        keys = set(coll.pending) | set(coll.queued) if key is None else {key, ALL}
        futs = [f for k in keys if (f := coll.queued.get(k) or coll.pending.get(k)) is not None]
        if not futs:
            return True
        done, _ = await asyncio.wait([asyncio.shield(f) for f in futs], timeout=PENDING_WAIT)
        return len(done) == len(futs)

    @property
    def size(self) -> int:
        return sum(len(c) for colls in self.projects.values() for c in colls.values())
