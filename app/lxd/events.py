"""The `/1.0/events` websocket: one shared connection per endpoint and project scope.

A reader task keeps reading (so LXD's pings are answered and its 5 s write deadline is never hit), reconnects
with backoff when the stream drops, remembers the last state of every recent operation (LXD forgets finished
operations after 5 s) and fans events out to bounded per-subscriber queues.

A stream runs only while someone holds it: a subscriber, an operation being followed, or a call in flight
(`held()`). Once nobody has held it for `IDLE_LINGER` seconds it is released: its reader and reconnect loop stop
and it leaves the table, so streams of projects nobody watches any more (or that never existed) cost nothing. The
next user gets a fresh stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import websockets

from app.lxd.errors import LXDError
from app.lxd.models import Event, OperationState

if TYPE_CHECKING:
    from app.lxd.client import Client

log = logging.getLogger("app.lxd.events")

EVENT_TYPES = ("operation", "lifecycle")
RECENT_OPERATIONS = 4096
KEEPALIVE = 5.0  # seconds between our pings; a server that does not answer one within as long is dropped
IDLE_LINGER = 5.0  # seconds a stream nobody holds stays open (a busy client keeps reusing it)
SETTLE = 1.0
"""Seconds a connection must have been up before it is trusted to carry every event of an operation created from
then on (LXD adds a listener only after answering the websocket handshake)."""


class Subscription:
    """A bounded queue of events of some types; the oldest are dropped (and counted) when the reader is slow."""

    def __init__(self, bus: EventBus, types: set[str] | None, maxsize: int) -> None:
        self._bus = bus
        self.types = types
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if self.types is not None and event.type not in self.types:
            return
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; raises `TimeoutError` after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            ev = await self.queue.get()
        if ev is None:
            raise LXDError("the events stream is closed")
        return ev

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            ev = await self.queue.get()
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        self._bus._subs.discard(self)
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
        self._bus._arm_release()


class Listener:
    """A callback told of every event as it is read, in the stream's order and before any operation waiter is
    told (so an operation's end is never seen before the events that came ahead of it), and of every gap: the
    stream dropped, so events may have been missed."""

    def __init__(self, bus: EventBus, on_event: Callable[[Event], None], on_gap: Callable[[], None]) -> None:
        self._bus = bus
        self.on_event = on_event
        self.on_gap = on_gap

    def close(self) -> None:
        self._bus._listeners.discard(self)
        self._bus._arm_release()


OperationWatcher = Callable[[OperationState | None], None]
"""Called with each new state of a watched operation, or None after a reconnect (state may have been missed)."""
EventObserver = Callable[[Event], None]
"""Called with every event the stream carries (on the event loop, synchronously: it must be quick)."""


class EventBus:
    """One events websocket for one scope (`project=` or `all-projects=true`)."""

    def __init__(self, client: Client, *, project: str | None, all_projects: bool = False,
                 backoff_max: float = 5.0, linger: float = IDLE_LINGER,
                 on_release: Callable[[EventBus], None] | None = None) -> None:
        self._client = client
        self.linger = linger
        self._on_release = on_release
        self._holds = 0
        self._last_used = time.monotonic()
        self._release_timer: asyncio.TimerHandle | None = None
        self.project = project
        self.all_projects = all_projects
        self.backoff_max = backoff_max
        self.connections = 0  # websocket connections made so far
        self.reconnects = 0
        self.settle = SETTLE
        self._connected_at: float | None = None
        self.connected = asyncio.Event()
        self._tried = asyncio.Event()  # set after every connection attempt, successful or not
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None
        self._closed = False
        self._subs: set[Subscription] = set()
        self._listeners: set[Listener] = set()
        self._watchers: dict[str, set[OperationWatcher]] = {}
        self._observers: list[EventObserver] = []
        self._recent: OrderedDict[str, OperationState] = OrderedDict()
        self.last_error: Exception | None = None

    @property
    def params(self) -> dict[str, str]:
        p = {"type": ",".join(EVENT_TYPES)}
        if self.all_projects:
            p["all-projects"] = "true"
        elif self.project:
            p["project"] = self.project
        return p

    # -- who holds the stream --------------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether anyone uses the stream: a subscriber, a followed operation or a call in flight."""
        return bool(self._subs or self._listeners or self._watchers or self._holds)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the stream for the duration of the block (a call whose operation will be followed)."""
        self._holds += 1
        self._last_used = time.monotonic()
        try:
            yield
        finally:
            self._holds -= 1
            self._arm_release()

    def _arm_release(self) -> None:
        """Release the stream once nobody has held it for `linger` seconds."""
        self._last_used = time.monotonic()
        if self._closed or self.held or self._release_timer is not None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing runs that needs releasing
            loop = asyncio.get_running_loop()
            self._release_timer = loop.call_later(self.linger, self._release_if_idle)

    def _release_if_idle(self) -> None:
        self._release_timer = None
        if self._closed or self.held:
            return
        idle = time.monotonic() - self._last_used
        if idle < self.linger:
            self._release_timer = asyncio.get_running_loop().call_later(self.linger - idle, self._release_if_idle)
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._on_release is not None:
            self._on_release(self)

    async def ensure_connected(self, timeout: float = 5.0) -> bool:
        """Start the reader when needed and wait until the stream is up; False if it is not within `timeout`."""
        if self._closed:
            return False
        self._arm_release()
        if self.connected.is_set() and self._task is not None and not self._task.done():
            return True
        self._tried.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lxd-events")
        if timeout <= 0:
            return self.connected.is_set()
        waiters = [asyncio.ensure_future(self.connected.wait()), asyncio.ensure_future(self._tried.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return self.connected.is_set()

    async def _run(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                ws = await self._client.transport.websocket("/1.0/events", self.params, keepalive=KEEPALIVE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = exc
                self._tried.set()
                log.debug("events connect failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            self._ws = ws
            self._connected_at = time.monotonic()
            self.connections += 1
            if self.connections > 1:
                self.reconnects += 1
                self._resync()
            self.connected.set()
            self._tried.set()
            delay = 0.1
            try:
                async for raw in ws:
                    self._dispatch(raw)
            except websockets.ConnectionClosed as exc:
                self.last_error = exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the stream alive whatever one message does
                self.last_error = exc
                log.warning("events reader error: %s", exc)
            finally:
                self.connected.clear()
                self._connected_at = None
                self._ws = None
                self._gap()
                with contextlib.suppress(Exception):
                    await asyncio.shield(ws.close())
            if not self._closed:
                self._resync()
                await asyncio.sleep(delay)

    def _gap(self) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_gap()
            except Exception:  # one listener must not stop the stream
                log.exception("events listener failed on a gap")

    def settled_connection(self) -> int | None:
        """The number of the current connection once it has been up for `settle` seconds, else None. While that
        same connection stays up, every event of an operation created after this call reaches the stream."""
        if self._connected_at is None or not self.connected.is_set():
            return None
        if time.monotonic() - self._connected_at < self.settle:
            return None
        return self.connections

    def still_on(self, connection: int | None) -> bool:
        """Whether the stream is still on `connection` (from `settled_connection`), never dropped since."""
        return connection is not None and self.connected.is_set() and self.connections == connection

    def _resync(self) -> None:
        for watchers in list(self._watchers.values()):
            for w in list(watchers):
                w(None)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            event = Event.model_validate(json.loads(raw))
        except (ValueError, TypeError):
            return
        state = None
        if event.type == "operation" and event.metadata.get("id"):
            try:
                state = OperationState.model_validate(event.metadata)
            except ValueError:
                state = None
        # Listeners and observers hear of an event before any waiter of an operation hears of its end: what they
        # keep is up to date by the time a job goes on.
        for listener in list(self._listeners):
            try:
                listener.on_event(event)
            except Exception:  # one listener must not stop the stream
                log.exception("events listener failed")
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("events observer failed")
        if state is not None:
            self.remember(state)
        for sub in list(self._subs):
            sub._put(event)

    def remember(self, state: OperationState) -> None:
        """Record the newest state of an operation (never replacing a final state by an older one)."""
        prev = self._recent.get(state.id)
        if prev is not None and prev.final and not state.final:
            return
        self._recent[state.id] = state
        self._recent.move_to_end(state.id)
        while len(self._recent) > RECENT_OPERATIONS:
            self._recent.popitem(last=False)
        for w in list(self._watchers.get(state.id, ())):
            w(state)

    def recent(self, op_id: str) -> OperationState | None:
        return self._recent.get(op_id)

    def watch(self, op_id: str, watcher: OperationWatcher) -> None:
        self._watchers.setdefault(op_id, set()).add(watcher)

    def unwatch(self, op_id: str, watcher: OperationWatcher) -> None:
        ws = self._watchers.get(op_id)
        if ws is not None:
            ws.discard(watcher)
            if not ws:
                del self._watchers[op_id]
        self._arm_release()

    def listen(self, on_event: Callable[[Event], None], on_gap: Callable[[], None]) -> Listener:
        """Call `on_event` with every event as it is read and `on_gap` whenever the stream drops; `.close()` the
        listener to stop. The stream is held while the listener is open."""
        listener = Listener(self, on_event, on_gap)
        self._listeners.add(listener)
        return listener

    def observe(self, observer: EventObserver) -> None:
        """Call `observer` with every event from now on, while the stream runs. Unlike a listener it does not
        keep the stream up: pair it with `settled_connection()`/`still_on()` to know it heard everything."""
        self._observers.append(observer)

    def subscribe(self, types: set[str] | None = None, maxsize: int = 1024) -> Subscription:
        sub = Subscription(self, types, maxsize)
        self._subs.add(sub)
        return sub

    async def aclose(self) -> None:
        self._closed = True
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for sub in list(self._subs):
            sub.close()


class BusTable(dict[tuple[str | None, bool], EventBus]):
    """The event buses of one endpoint, shared by its per-project clients, and what released ones had counted."""

    def __init__(self) -> None:
        super().__init__()
        self.released_reconnects = 0
        self.released_connections = 0

    def release(self, bus: EventBus) -> None:
        key = (None, True) if bus.all_projects else (bus.project, False)
        if self.get(key) is bus:
            del self[key]
        self.released_reconnects += bus.reconnects
        self.released_connections += bus.connections


class Events:
    """`client.events`: the shared event buses and subscriptions to them."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._buses = BusTable()

    def bus(self, project: str | None = None, *, all_projects: bool = False) -> EventBus:
        key = (None, True) if all_projects else (project or self._client.project, False)
        bus = self._buses.get(key)
        if bus is None:
            bus = self._buses[key] = EventBus(self._client, project=key[0], all_projects=key[1],
                                              on_release=self._buses.release)
        return bus

    @property
    def reconnect_count(self) -> int:
        """How many times this client's events streams were re-opened after dropping."""
        return self._buses.released_reconnects + sum(b.reconnects for b in self._buses.values())

    @property
    def connection_count(self) -> int:
        """How many events websockets this client has opened, over all scopes."""
        return self._buses.released_connections + sum(b.connections for b in self._buses.values())

    @property
    def open_streams(self) -> list[str]:
        """The scopes that have a stream, running or about to be released (`*` for all projects)."""
        return sorted("*" if b.all_projects else str(b.project) for b in self._buses.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, types: set[str] | None = None, *, project: str | None = None,
                        all_projects: bool = False, maxsize: int = 1024,
                        timeout: float = 10.0) -> AsyncIterator[Subscription]:
        """Receive events of `types` (all when None) until the block ends."""
        bus = self.bus(project, all_projects=all_projects)
        sub = bus.subscribe(types, maxsize)  # held from here: not released while connecting
        try:
            if not await bus.ensure_connected(timeout):
                raise bus.last_error if isinstance(bus.last_error, LXDError) else LXDError(
                    f"events stream not connected within {timeout:g}s: {bus.last_error}")
            yield sub
        finally:
            sub.close()

    async def aclose(self) -> None:
        for bus in self._buses.values():
            await bus.aclose()
        self._buses.clear()
