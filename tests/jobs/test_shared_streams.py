"""Job streams across gateway processes on one PostgreSQL database: a process serves the stream of a job another
runs, with the owner's seq, resumes it after a `Last-Event-ID`, gets every `status`, `output` and `end` (progress
merged), and a stream goes on to `end` when the job changes owner. Runners here are gateway processes in miniature:
each its own store, bus and runner on one private PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.jobs.access import Viewer
from app.jobs.bus import JobBus, JobEvent, Subscription
from app.jobs.kinds import JobKind, JobKinds
from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.jobs.runner import JobContext, JobRunner
from app.store.errors import StoreUnavailable
from app.store.jobs import SQLiteJobStore
from app.store.postgres import PostgresJobStore
from tests.support import replicas as support
from tests.support.replicas import started_replicas


class Replica(support.Replica):
    """One gateway process: its store, bus and runner, with the kinds the tests use."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(url, name, bus=JobBus(capacity=4096, history=256))
        self.gates: dict[str, asyncio.Event] = {g: asyncio.Event() for g in ("one", "two", "done")}
        self.kinds.register(JobKind("t.steps", self.steps))
        self.kinds.register(JobKind("t.burst", self.burst))
        self.kinds.register(JobKind("t.forever", self.forever, recover=self.recover))

    async def steps(self, ctx: JobContext) -> dict[str, Any]:
        """Progress, output (text and bytes) and an LXD operation, in steps the test opens one by one."""
        await ctx.progress("first", 10)
        await ctx.output("stdout", "hello\n")
        await self.gates["one"].wait()
        await ctx.record_operation("local", "op-1")
        await ctx.progress("second", 50, "half")
        await ctx.output("stderr", b"\xff\x00binary")
        await self.gates["two"].wait()
        await ctx.progress("third", 90)
        return {"answer": 42}

    async def burst(self, ctx: JobContext) -> str:
        """Many progress messages at once, an output in between."""
        for i in range(300):
            await ctx.progress("burst", i % 100)
            if i == 150:
                await ctx.output("stdout", "middle\n")
        await ctx.progress("burst", 100, "last")
        return "done"

    async def forever(self, ctx: JobContext) -> str:
        """Progress every 50 ms until cancelled (or taken away)."""
        for i in range(100_000):
            await ctx.checkpoint(f"tick-{i}", None)
            await ctx.progress("ticking", i % 100)
            await asyncio.sleep(0.05)
        return "never"


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[Callable[[str], Awaitable[Replica]]]:
    async with started_replicas(lambda name: Replica(postgres_url, name)) as start:
        yield start


async def subscribe(replica: Replica, job_id: str, *, after: int | None = None,
                    viewer: Viewer | None = None) -> tuple[Subscription, list[JobEvent]]:
    kwargs: dict[str, Any] = {"after": after} if viewer is None else {"after": after, "viewer": viewer}
    subscribed = await replica.runner.subscribe(job_id, **kwargs)
    assert subscribed is not None, f"{replica.name} serves no stream of {job_id}"
    return subscribed


async def read_to_end(subscribed: tuple[Subscription, list[JobEvent]], timeout: float = 15) -> list[JobEvent]:
    sub, events = subscribed
    events = list(events)
    async with asyncio.timeout(timeout):
        while not events or events[-1].type != "end":
            event = await sub.get()
            assert event is not None, f"the stream closed without `end` (slow: {sub.slow}): {events}"
            events.append(event)
    return events


def changes(events: list[JobEvent]) -> list[tuple[str, int, Any]]:
    return [(e.type, e.seq, e.data) for e in events if e.type != "snapshot"]


async def message_rows(url: str, job_id: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT seq, type FROM job_messages WHERE job_id=%s ORDER BY seq", (job_id,))
        return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]


async def test_a_stream_on_another_replica_gets_every_message_with_the_owners_seq_then_end(replicas: Any) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    job = await a.runner.submit("t.steps")
    on_a = a.runner.bus.subscribe(job.id)
    assert on_a is not None
    on_b = await subscribe(b, job.id)
    assert on_b[1][0].type == "snapshot" and on_b[1][0].job["id"] == job.id
    await asyncio.sleep(1.2)  # progress a second apart: none merged
    a.gates["one"].set()
    await asyncio.sleep(1.2)
    a.gates["two"].set()
    seen_a, seen_b = await read_to_end(on_a), await read_to_end(on_b)
    assert changes(seen_b) == [c for c in changes(seen_a) if c[1] > on_b[1][0].seq]
    assert seen_b[-1].type == "end" and seen_b[-1].seq == seen_a[-1].seq
    assert seen_b[-1].job["status"] == "succeeded" and seen_b[-1].job["result"] == {"answer": 42}
    stored = await b.store.load(job.id)
    assert stored is not None and stored.seq == seen_b[-1].seq  # the row says the same end
    # a subscriber arriving after the end reads the job from the store: nothing followed any more
    assert await b.runner.subscribe(job.id) is None and b.runner.bus.followed() == {}


async def test_every_message_reaches_a_stream_opened_on_another_replica_before_the_job_runs(
        replicas: Any) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    job = await a.runner.submit("t.steps")
    on_b = await subscribe(b, job.id)
    on_a = a.runner.bus.subscribe(job.id, after=on_b[1][0].seq)  # what b shows next, a shows too
    assert on_a is not None
    await asyncio.sleep(1.2)
    a.gates["one"].set()
    await asyncio.sleep(1.2)
    a.gates["two"].set()
    seen_a, seen_b = await read_to_end(on_a), await read_to_end(on_b)
    assert changes(seen_b) == changes(seen_a)
    types = [e.type for e in seen_b[1:]]
    assert types.count("output") == 2 and types.count("status") >= 1 and types[-1] == "end"
    outputs = [e.data for e in seen_b if e.type == "output"]
    assert outputs == [{"stream": "stdout", "text": "hello\n"},
                       {"stream": "stderr", "b64": "/wBiaW5hcnk="}]


async def test_output_reaches_only_the_owner_of_the_job_on_another_replica(replicas: Any) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    job = await a.runner.submit("t.steps", token_id="tok-1")
    owner = await subscribe(b, job.id, viewer=Viewer(token_id="tok-1"))
    other = await subscribe(b, job.id, viewer=Viewer(token_id="someone-else"))
    for gate in ("one", "two"):
        await asyncio.sleep(0.3)
        a.gates[gate].set()
    seen_owner, seen_other = await read_to_end(owner), await read_to_end(other)
    assert any(e.type == "output" for e in seen_owner)
    assert not any(e.type == "output" for e in seen_other) and seen_other[-1].type == "end"
    hidden = await a.runner.submit("t.forever", remote="r1", token_id="tok-1")
    outside = Viewer(token_id="tok-1", remotes=("r2",))
    assert await b.runner.subscribe(hidden.id, viewer=outside) is None  # not its remote: as if it did not exist
    assert b.runner.bus.followed() == {}


async def test_last_event_id_resumes_on_another_replica_without_repeats(replicas: Any) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    job = await a.runner.submit("t.steps")
    on_a = a.runner.bus.subscribe(job.id)
    assert on_a is not None
    await asyncio.sleep(1.2)
    a.gates["one"].set()

    async def written(count: int) -> bool:
        return len(await message_rows(a.store.conninfo, job.id)) >= count

    deadline = time.monotonic() + 5
    while not await written(5):  # running, first progress, hello, the operation, second progress...
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    rows = await message_rows(a.store.conninfo, job.id)
    resume_after = rows[1][0]
    resumed = await subscribe(b, job.id, after=resume_after)
    assert resumed[1] and resumed[1][0].seq == rows[2][0]  # no snapshot: the messages after it, from the table
    assert all(e.seq > resume_after for e in resumed[1])
    caught_up = await subscribe(b, job.id, after=10_000)
    assert caught_up[1] == []
    await asyncio.sleep(0.3)
    a.gates["two"].set()
    seen_a, seen_b, seen_late = await read_to_end(on_a), await read_to_end(resumed), await read_to_end(caught_up)
    assert changes(seen_b) == [c for c in changes(seen_a) if c[1] > resume_after]
    assert seen_late == [seen_b[-1]] or seen_late[-1].seq == seen_b[-1].seq


async def test_a_progress_burst_is_merged_but_status_output_and_end_all_arrive(
        replicas: Any, postgres_url: str) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    gate = asyncio.Event()

    async def gated_burst(ctx: JobContext) -> str:
        await gate.wait()
        return await a.burst(ctx)

    a.kinds.register(JobKind("t.gated-burst", gated_burst))
    job = await a.runner.submit("t.gated-burst")
    on_a = a.runner.bus.subscribe(job.id)
    assert on_a is not None
    on_b = await subscribe(b, job.id)
    started = time.monotonic()
    gate.set()
    seen_a = await read_to_end(on_a)
    took = time.monotonic() - started
    seen_b = await read_to_end(on_b)
    progress_a = [e for e in seen_a if e.type == "progress"]
    progress_b = [e for e in seen_b if e.type == "progress"]
    print(f"\nprogress burst: {len(progress_a)} published by the owner in {took:.2f}s, {len(progress_b)} written "
          "for the others")
    assert len(progress_a) == 301 and len(progress_b) <= 3 + int(took)  # one a second, one before output and end
    assert [(e.seq, e.data) for e in seen_b if e.type == "output"] == \
        [(e.seq, e.data) for e in seen_a if e.type == "output"]
    after = seen_b[0].seq  # b's snapshot: the job may have started running before b followed it
    assert [e.seq for e in seen_b if e.type == "status"] == \
        [e.seq for e in seen_a if e.type == "status" and e.seq > after]
    assert progress_b[-1].data == progress_a[-1].data  # the last progress is never lost
    assert seen_b[-1].type == "end" and seen_b[-1].seq == seen_a[-1].seq
    rows = await message_rows(postgres_url, job.id)
    assert [r for r in rows if r[0] > after] == [(e.seq, e.type) for e in seen_b[1:]]
    assert len(rows) <= 6 + int(took)  # status, progress, output, end; a progress held back before each


async def test_a_takeover_mid_stream_goes_on_to_end_on_every_replica(
        replicas: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    job = await a.runner.submit("t.forever")
    on_a = a.runner.bus.subscribe(job.id)
    assert on_a is not None
    on_b = await subscribe(b, job.id)
    await asyncio.sleep(1.5)

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(a.store, "renew_leases", unreachable)  # a network split, as far as a's leases go
    monkeypatch.setattr(a.store, "claim_expired", unreachable)
    seen_a, seen_b = await asyncio.gather(read_to_end(on_a, 20), read_to_end(on_b, 20))
    stored = await b.store.load(job.id)
    assert stored is not None and stored.owner_id == "b" and stored.job.status is JobStatus.failed
    for seen in (seen_a, seen_b):
        assert seen[-1].type == "end" and seen[-1].seq == stored.seq
        assert seen[-1].job["error"]["detail"] == "settled by b"
        assert [e.seq for e in seen] == sorted({e.seq for e in seen})  # in order, never one twice
        assert any(e.type == "progress" and e.data and e.data["stage"] == "recovering" for e in seen)
    before_takeover = max(e.seq for e in seen_b if e.type == "progress" and e.data["stage"] == "ticking")
    recovering = next(e for e in seen_b if e.type == "progress" and e.data["stage"] == "recovering")
    assert recovering.seq > before_takeover
    assert [c for c in changes(seen_a) if c[1] >= recovering.seq] == \
        [c for c in changes(seen_b) if c[1] >= recovering.seq]  # the takeover's messages, alike on both


async def test_the_table_keeps_few_messages_of_a_job_and_none_of_another_owner(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    await store.open()
    try:
        job = Job(id=new_job_id(), kind="t.x", status=JobStatus.running, created_at=utcnow())
        await store.insert(job, params={}, owner_id="a", lease_until=time.time() + 60)
        rows = [(job.id, seq, "status", '{"job":{},"data":null}') for seq in range(1, 11)]
        assert await store.append_messages("a", rows) == set()
        assert await store.append_messages("b", [(job.id, 11, "status", "{}")]) == {job.id}
        assert [r[1] for r in await store.read_messages({job.id: 7})] == [8, 9, 10]
        assert await store.last_message_seqs([job.id]) == {job.id: 10}
        await store.trim_messages(job.id, 6)
        assert [r[1] for r in await store.recent_messages(job.id, 100)] == [5, 6, 7, 8, 9, 10]
        size = len(rows[0][3])
        await store.trim_messages(job.id, 6, keep_bytes=4 * size + 1)  # the newest that hold so many bytes
        assert [r[1] for r in await store.recent_messages(job.id, 100)] == [7, 8, 9, 10]
        await store.trim_messages(job.id, 6, keep_bytes=1)  # the newest always stays
        assert [r[1] for r in await store.recent_messages(job.id, 100)] == [10]
        job.status, job.finished_at = JobStatus.succeeded, utcnow()
        await store.save(job, seq=11, owner_id="a")
        assert await store.last_message_seqs([job.id]) == {job.id: 11}
        assert await store.prune_messages(utcnow()) == 1
        assert await store.job_states([job.id, "gone"]) == {job.id: True}
    finally:
        await store.close()


async def test_the_embedded_store_keeps_streams_in_the_process(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await store.open()
    runner = JobRunner(store, JobBus(), kinds=JobKinds())
    await runner.start()
    try:
        assert runner.streams is None and runner.bus.on_publish is None
        assert await runner.subscribe("nope") is None
    finally:
        await runner.shutdown(0)
        await store.close()


async def test_without_notifications_a_stream_on_another_replica_still_reaches_end(
        postgres_url: str, replicas: Any) -> None:
    a: Replica = await replicas("a")
    b = Replica(postgres_url, "b")

    async def deaf(callback: Callable[[str], None]) -> None:  # every notification lost: the poll reads them
        return None

    b.store.listen_messages = deaf  # type: ignore[method-assign]
    await b.open()
    try:
        job = await a.runner.submit("t.steps")
        on_a = a.runner.bus.subscribe(job.id)
        assert on_a is not None
        on_b = await subscribe(b, job.id)
        await asyncio.sleep(1.2)
        a.gates["one"].set()
        await asyncio.sleep(1.2)
        a.gates["two"].set()
        seen_a, seen_b = await read_to_end(on_a), await read_to_end(on_b)
        assert changes(seen_b) == [c for c in changes(seen_a) if c[1] > on_b[1][0].seq]
    finally:
        await b.close()


async def test_a_job_that_ended_without_its_end_message_ends_its_streams_from_its_row(
        replicas: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    append = a.store.append_messages

    async def no_end(owner_id: str, messages: list[Any]) -> set[str]:  # as if a died right after storing the end
        return await append(owner_id, [m for m in messages if m[2] != "end"])

    monkeypatch.setattr(a.store, "append_messages", no_end)
    job = await a.runner.submit("t.steps")
    on_b = await subscribe(b, job.id)
    a.gates["one"].set()
    a.gates["two"].set()
    seen = await read_to_end(on_b, 3 * b.runner.streams.poll_interval + 2)  # type: ignore[union-attr]
    stored = await b.store.load(job.id)
    assert stored is not None and stored.job.status is JobStatus.succeeded
    assert seen[-1].seq == stored.seq and seen[-1].job["result"] == {"answer": 42}


async def test_a_job_writing_much_keeps_only_its_latest_messages_in_the_table(
        replicas: Any, postgres_url: str) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    gate = asyncio.Event()

    async def chatter(ctx: JobContext) -> str:
        await gate.wait()
        for i in range(700):
            await ctx.output("stdout", f"line {i}\n")
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        return "done"

    a.kinds.register(JobKind("t.chatter", chatter))
    job = await a.runner.submit("t.chatter")
    on_b = await subscribe(b, job.id)
    gate.set()
    seen = await read_to_end(on_b)
    lines = [int(e.data["text"].split()[1]) for e in seen if e.type == "output" and e.data]
    assert lines == sorted(set(lines)) and lines[-1] == 699  # all of them unless b fell more than `keep` behind
    keep = a.runner.streams.keep  # type: ignore[union-attr]
    rows = await message_rows(postgres_url, job.id)
    assert keep == 256 and len(rows) <= 2 * keep + 1 and rows[-1][1] == "end"
