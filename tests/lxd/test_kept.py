"""What `app.lxd.kept` keeps: only answers read on a settled stream that stayed up with no dropping event, used
only while that connection lasts and for `ttl` seconds."""

from __future__ import annotations

from typing import Any

from app.lxd.kept import Kept
from app.lxd.models import Event


class Stream:
    """Stands in for an `EventBus`: which connection is up, and whether it has settled."""

    def __init__(self) -> None:
        self.connection = 1
        self.up = True
        self.settled = True

    def settled_connection(self) -> int | None:
        return self.connection if self.up and self.settled else None

    def still_on(self, connection: int | None) -> bool:
        return self.up and connection == self.connection


def event(action: str) -> Event:
    return Event(type="lifecycle", metadata={"action": action})


def table(ttl: float = 60.0) -> Kept[str, Any]:
    return Kept(lambda e: str(e.metadata.get("action", "")).startswith("image"), ttl)


def test_kept_while_the_connection_lasts_and_dropped_by_a_matching_event() -> None:
    s, k = Stream(), table()
    k.put(s, "a", 1, k.begin(s))
    assert k.get(s, "a") == 1
    k.on_event(event("instance-created"))
    assert k.get(s, "a") == 1
    k.on_event(event("image-alias-updated"))
    assert k.get(s, "a") is None


def test_an_event_during_the_read_or_a_drop_keeps_nothing() -> None:
    s, k = Stream(), table()
    begun = k.begin(s)
    k.on_event(event("image-deleted"))
    k.put(s, "a", 1, begun)
    assert k.get(s, "a") is None
    begun = k.begin(s)
    s.connection = 2  # dropped and reconnected during the read
    k.put(s, "a", 1, begun)
    assert k.get(s, "a") is None
    k.put(s, "a", 1, k.begin(s))
    s.up = False  # dropped after: events may be missed from now on
    assert k.get(s, "a") is None


def test_nothing_is_kept_from_an_unsettled_stream_nor_past_its_time() -> None:
    s, k = Stream(), table()
    s.settled = False
    k.put(s, "a", 1, k.begin(s))
    assert k.get(s, "a") is None
    s.settled = True
    short = table(ttl=0.0)
    short.put(s, "a", 1, short.begin(s))
    assert short.get(s, "a") is None
