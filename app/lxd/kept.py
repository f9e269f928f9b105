"""Answers read from LXD, kept a few seconds while LXD's events stream says nothing about them.

`kept_on(bus, name, drops)` is the table `name` of one events stream (one endpoint and project). An answer read with
`begin()` taken before the read is kept by `put()` only when the stream had been up and settled before the read
(`EventBus.settled_connection`) and stayed on that connection, with no event that `drops` matched, until the read
was done. It is used by `get()` only while that same connection is still up (a stream that dropped may have missed
events) and for `ttl` seconds. Any event that `drops` matches empties the table. What is left is the time LXD takes
to deliver an event (well under a millisecond).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from app.lxd.events import EventBus
from app.lxd.models import Event

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Stream(Protocol):
    """What a table asks of its events stream (an `EventBus`)."""

    def settled_connection(self) -> int | None: ...

    def still_on(self, connection: int | None) -> bool: ...


class Kept(Generic[K, V]):
    def __init__(self, drops: Callable[[Event], bool], ttl: float) -> None:
        self.drops = drops
        self.ttl = ttl
        self._kept: dict[K, tuple[V, int, float]] = {}
        self._generation = 0

    def on_event(self, event: Event) -> None:
        if self.drops(event):
            self._generation += 1
            self._kept.clear()

    def get(self, bus: Stream, key: K) -> V | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        value, connection, until = kept
        if time.monotonic() >= until or not bus.still_on(connection):
            self._kept.pop(key, None)
            return None
        return value

    def begin(self, bus: Stream) -> tuple[int, int] | None:
        """Taken before a read whose answer may be kept (None: it may not)."""
        connection = bus.settled_connection()
        return None if connection is None else (connection, self._generation)

    def put(self, bus: Stream, key: K, value: V, begun: tuple[int, int] | None) -> None:
        if begun is None:
            return
        connection, generation = begun
        if generation == self._generation and bus.still_on(connection):
            self._kept[key] = (value, connection, time.monotonic() + self.ttl)


_TABLES: weakref.WeakKeyDictionary[EventBus, dict[str, Kept[Any, Any]]] = weakref.WeakKeyDictionary()


def kept_on(bus: EventBus, name: str, drops: Callable[[Event], bool], ttl: float) -> Kept[Any, Any]:
    """The table `name` of `bus` (made, and made to listen to the stream, when first asked for)."""
    tables = _TABLES.setdefault(bus, {})
    table = tables.get(name)
    if table is None:
        table = tables[name] = Kept(drops, ttl)
        bus.observe(table.on_event)
    return table
