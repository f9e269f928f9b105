"""The bus: snapshot first, increasing seq, `end` always delivered, slow readers dropped, resume from history."""

from __future__ import annotations

from app.jobs.bus import JobBus
from app.jobs.models import Job, JobStatus, utcnow


def job(kind: str = "k") -> Job:
    return Job(id="j1", kind=kind, status=JobStatus.running, created_at=utcnow())


async def test_snapshot_then_changes_then_end() -> None:
    bus = JobBus(capacity=8)
    j = job()
    bus.open(j)
    bus.publish(j, "progress", {"percent": 1})
    subscribed = bus.subscribe("j1")
    assert subscribed is not None
    sub, first = subscribed
    assert [e.type for e in first] == ["snapshot"] and first[0].seq == 1
    bus.publish(j, "progress", {"percent": 2})
    j.status = JobStatus.succeeded
    bus.publish(j, "end")
    got = [e async for e in sub]
    assert [(e.type, e.seq) for e in got] == [("progress", 2), ("end", 3)]
    assert got[-1].job["status"] == "succeeded"
    assert bus.subscribe("j1") is None  # ended: read the store


async def test_slow_subscriber_is_dropped_but_others_get_end() -> None:
    bus = JobBus(capacity=4)
    j = job()
    bus.open(j)
    slow, _ = bus.subscribe("j1")  # type: ignore[misc]
    fast, _ = bus.subscribe("j1")  # type: ignore[misc]
    seen = []
    for i in range(4):
        bus.publish(j, "progress", {"i": i})
        seen.append(await fast.get())
    bus.publish(j, "progress", {"i": 4})  # the slow one holds 4 already: over its capacity
    assert slow.slow and slow.closed
    assert await slow.get() is None
    assert (await fast.get()).data == {"i": 4}  # type: ignore[union-attr]
    for _ in range(4):
        bus.publish(j, "progress", {})
    bus.publish(j, "end")  # a full queue still takes `end`
    events = [e async for e in fast]
    assert events[-1].type == "end" and not fast.slow


async def test_resume_after_seq_replays_only_the_missed() -> None:
    bus = JobBus(capacity=16, history=16)
    j = job()
    bus.open(j)
    for i in range(5):
        bus.publish(j, "progress", {"i": i})
    _sub, first = bus.subscribe("j1", after=3)  # type: ignore[misc]
    assert [e.seq for e in first] == [4, 5]
    _sub2, first2 = bus.subscribe("j1", after=5)  # type: ignore[misc]
    assert first2 == []
    _sub3, first3 = bus.subscribe("j1", after=-100)  # type: ignore[misc]
    assert [e.type for e in first3] == ["snapshot"]


async def test_global_subscription_filters_by_kind() -> None:
    bus = JobBus()
    sub = bus.subscribe_all(kind="a")
    a, b = job("a"), Job(id="j2", kind="b", status=JobStatus.running, created_at=utcnow())
    bus.open(a)
    bus.open(b)
    bus.publish(b, "progress", {})
    bus.publish(a, "progress", {})
    event = await sub.get()
    assert event is not None and event.kind == "a"
    assert sub.pending == 0
    bus.close_all()
    assert await sub.get() is None
