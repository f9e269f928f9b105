"""The bus: snapshot first, increasing seq, `end` always delivered, slow readers dropped, resume from history; each
reader sees only the jobs and output it may (and the rendering of a job for a caller)."""

from __future__ import annotations

from app.jobs.access import Viewer
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


async def test_each_reader_gets_only_the_jobs_and_output_it_may_see() -> None:
    bus = JobBus(capacity=8)
    j = Job(id="j1", kind="container.exec", status=JobStatus.running, created_at=utcnow(), remote="local",
            project="default", token_id="owner")
    bus.open(j)
    owner = Viewer(token_id="owner")
    other = Viewer(token_id="other")
    admin = Viewer(token_id="root", admin=True)
    elsewhere = Viewer(token_id="p2", admin=True, projects=("p2",))
    subs = {v.token_id: bus.subscribe_all(viewer=v) for v in (owner, other, admin, elsewhere)}
    assert bus.subscribe("j1", viewer=elsewhere) is None and bus.snapshots(viewer=elsewhere) == []
    other_sub, first = bus.subscribe("j1", viewer=other)  # type: ignore[misc]
    assert [e.type for e in first] == ["snapshot"]
    bus.publish(j, "output", {"stream": "stdout", "text": "secret"})
    j.status, j.result = JobStatus.succeeded, {"exit_code": 0, "stdout": "secret", "stderr": "", "truncated": False}
    bus.publish(j, "end")
    got = {name: [e.message() for e in sub._queue] for name, sub in subs.items()}
    got["other-one"] = [e.message() for e in other_sub._queue]
    for name in ("owner", "root"):
        assert [m["type"] for m in got[name]] == ["output", "end"]
        assert got[name][-1]["job"]["result"]["stdout"] == "secret"
    for name in ("other", "other-one"):
        assert [m["type"] for m in got[name]] == ["end"]
        assert got[name][-1]["job"]["result"] == {"exit_code": 0, "truncated": False, "output_omitted": True}
    assert got["p2"] == []
    assert "token_id" not in got["owner"][-1]["job"]


def test_render_shows_params_and_output_to_the_owner_and_admins_only() -> None:
    j = Job(id="j1", kind="container.exec", status=JobStatus.succeeded, created_at=utcnow(), remote="local",
            project="default", token_id="owner", result={"exit_code": 1, "stdout": "o", "stderr": "e"})
    params = {"command": ["id"]}
    for v in (Viewer(token_id="owner"), Viewer(token_id="x", admin=True)):
        assert v.render(j, params=params)["params"] == params and v.render(j)["result"]["stdout"] == "o"
        listed = v.render(j, params=params, listing=True)
        assert listed["params"] is None and listed["result"] == {"exit_code": 1, "output_omitted": True}
    shown = Viewer(token_id="other").render(j, params=params)
    assert shown["params"] is None and shown["result"] == {"exit_code": 1, "output_omitted": True}
    assert "token_id" not in shown
    legacy = j.model_copy(update={"token_id": None})  # stored before jobs were bound to tokens: admins only
    assert Viewer(token_id="").render(legacy)["result"] == {"exit_code": 1, "output_omitted": True}
    assert not Viewer(token_id="x", projects=("p2",)).sees_job(j)
    assert not Viewer(token_id="x", remotes=("local",)).sees(None, "default")


async def test_resume_history_is_bounded_in_bytes_of_output_too() -> None:
    bus = JobBus(capacity=8, history=1000, history_bytes=16 * 1024)
    j = job()
    bus.open(j)
    for _ in range(100):
        bus.publish(j, "output", {"stream": "stdout", "text": "x" * 4096})
    kept = bus._channels["j1"].history
    assert 1 < len(kept) <= 4 and sum(e.weight for e in kept) <= 16 * 1024
    _sub, first = bus.subscribe("j1", after=kept[0].seq - 1)  # type: ignore[misc]
    assert [e.seq for e in first] == [e.seq for e in kept]  # still kept: exactly what was missed
    _sub, first = bus.subscribe("j1", after=1)  # type: ignore[misc]
    assert [(e.type, e.seq) for e in first] == [("snapshot", 100)]  # no longer kept: a fresh snapshot


async def test_a_late_subscriber_gets_the_job_as_last_published_not_as_changed_since() -> None:
    bus = JobBus(capacity=8)
    j = Job(id="j2", kind="k", status=JobStatus.running, created_at=utcnow(), remote="local", project="default",
            token_id="owner", result={"stdout": "secret"})
    bus.open(j)
    j.progress.percent = 40
    bus.publish(j, "progress", {"percent": 40})
    j.progress.percent = 99  # changed in place, not published
    live = bus.live("j2")
    assert live is not None and live.progress.percent == 40 and live.token_id == "owner"
    for viewer, stdout in ((Viewer(token_id="owner"), "secret"), (Viewer(token_id="other"), None)):
        subscribed = bus.subscribe("j2", viewer=viewer)
        assert subscribed is not None
        snapshot = subscribed[1][0]
        assert snapshot.type == "snapshot" and snapshot.job["progress"]["percent"] == 40
        assert (snapshot.job["result"] or {}).get("stdout") == stdout


async def test_a_followed_job_passes_on_its_owners_messages_with_their_seq() -> None:
    bus = JobBus(capacity=8)
    everything = bus.subscribe_all()
    bus.follow(job(), 40)
    assert bus.live("j1") is None and bus.snapshots() == [] and bus.followed() == {"j1": 40}
    sub, first = bus.subscribe("j1")  # type: ignore[misc]
    assert [(e.type, e.seq) for e in first] == [("snapshot", 40)]
    for seq, status, kind in ((41, "running", "progress"), (41, "running", "status"), (40, "running", "status"),
                              (45, "running", "output"), (46, "succeeded", "end")):
        bus.deliver(kind, seq, "j1", {"id": "j1", "kind": "k", "status": status}, {"n": seq})  # type: ignore[arg-type]
    got = [e async for e in sub]
    assert [(e.type, e.seq) for e in got] == [("progress", 41), ("output", 45), ("end", 46)]  # none twice
    assert everything.pending == 0  # the all-jobs stream carries the jobs this process runs
    assert not bus.carries("j1") and bus.subscribe("j1") is None


async def test_a_followed_job_is_let_go_with_its_last_reader() -> None:
    bus = JobBus()
    bus.follow(job(), 3)
    sub, _ = bus.subscribe("j1")  # type: ignore[misc]
    sub.close()
    assert not bus.carries("j1")


async def test_a_job_given_up_keeps_its_readers_following_it_and_taken_back_goes_on_numbering() -> None:
    bus = JobBus()
    j = job()
    bus.open(j)
    bus.publish(j, "progress", {"percent": 1})
    sub, _ = bus.subscribe("j1")  # type: ignore[misc]
    bus.drop("j1", follow=True)
    assert not sub.closed and bus.followed() == {"j1": 1}
    bus.publish(j, "progress", {"percent": 2})  # a late report of the process that gave it up: not passed on
    bus.deliver("status", 100_002, "j1", {"id": "j1", "kind": "k", "status": "running"}, {"recovering": True})
    bus.open(j, 100_005)  # this process takes the job back
    bus.publish(j, "end")
    got = [e async for e in sub]
    assert [(e.type, e.seq) for e in got] == [("status", 100_002), ("end", 100_006)]
    idle = JobBus()
    idle.open(j)
    idle.drop("j1", follow=True)  # nobody reads it: nothing to follow
    assert not idle.carries("j1")
