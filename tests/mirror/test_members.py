"""How the model of a clustered remote follows its members' statuses (no LXD: a client that answers what the test
says): a change reloads the collections that depend on members, and nothing else does."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from app.mirror import remote as remote_mod
from app.mirror.kinds import MirrorKind
from app.mirror.mirror import Mirror
from app.mirror.remote import RemoteMirror


class FakeCluster:
    """`client.cluster` and `client.server` of a remote whose members' statuses the test sets."""

    def __init__(self, clustered: bool, statuses: dict[str, str]) -> None:
        self.is_clustered = clustered
        self.statuses = statuses
        self.fail: Exception | None = None
        self.member_reads = 0
        self.server = SimpleNamespace(clustered=self.clustered)

    async def clustered(self) -> bool:
        return self.is_clustered

    async def members(self) -> list[SimpleNamespace]:
        self.member_reads += 1
        if self.fail is not None:
            raise self.fail
        return [SimpleNamespace(server_name=n, status=s) for n, s in self.statuses.items()]


def _mirror(fake: FakeCluster, listings: list[tuple[str, str]]) -> RemoteMirror:
    def kind(name: str, per_member: bool) -> MirrorKind:
        async def load_all(client: Any, remote: str) -> list[tuple[str, dict[str, Any]]]:
            listings.append((client.project, name))
            return []

        async def load_one(client: Any, remote: str, key: str) -> dict[str, Any] | None:
            return None

        return MirrorKind(name=name, load_all=load_all, load_one=load_one, per_member=per_member)

    client = SimpleNamespace(project="default", cluster=fake, server=fake.server,
                             with_project=lambda p: SimpleNamespace(project=p))
    rm = RemoteMirror("r", client, [kind("instances", True), kind("profiles", False)])  # type: ignore[arg-type]
    for project in ("default", "p2"):
        for coll in rm._collections(project).values():
            coll.loaded = True
    rm.synced = True
    return rm


async def _settled(rm: RemoteMirror) -> None:
    while rm._tasks:
        await asyncio.gather(*list(rm._tasks), return_exceptions=True)


async def test_a_member_going_offline_and_back_reloads_the_instances_of_every_project_and_nothing_else() -> None:
    fake = FakeCluster(True, {"m1": "Online", "m2": "Online", "m3": "Online"})
    listings: list[tuple[str, str]] = []
    rm = _mirror(fake, listings)
    await rm._take_members()
    assert rm.members == {"m1": "Online", "m2": "Online", "m3": "Online"}

    await rm._poll_members(rm._gap)  # nothing changed: nothing read but the members
    await _settled(rm)
    assert listings == [] and rm.counters.member_changes == 0

    for status in ("Offline", "Online", "Evacuated"):
        fake.statuses["m3"] = status
        await rm._poll_members(rm._gap)
        await _settled(rm)
        assert sorted(listings) == [("default", "instances"), ("p2", "instances")], status
        listings.clear()
    assert rm.counters.member_changes == 3 and rm.counters.member_polls == 5

    fake.statuses["m4"] = "Online"  # a member joined
    await rm._poll_members(rm._gap)
    await _settled(rm)
    assert len(listings) == 2 and rm.counters.member_changes == 4
    await rm.aclose()


async def test_after_a_change_each_poll_lists_again_quietly_until_the_member_settles() -> None:
    fake = FakeCluster(True, {"m1": "Online", "m3": "Offline"})
    listings: list[tuple[str, str]] = []
    rm = _mirror(fake, listings)
    await rm._take_members()
    fake.statuses["m3"] = "Online"
    await rm._poll_members(rm._gap)  # back: listed at once, readers wait for it
    assert set(rm.projects["default"]["instances"].pending) == {remote_mod.ALL}
    await _settled(rm)
    listings.clear()
    await rm._poll_members(rm._gap)  # LXD may still show its instances unreachable: listed again, quietly
    assert not rm.projects["default"]["instances"].pending
    await _settled(rm)
    assert sorted(listings) == [("default", "instances"), ("p2", "instances")]
    listings.clear()
    rm._members_settle = 0.0  # the window is over: a poll reads the members alone
    await rm._poll_members(rm._gap)
    await _settled(rm)
    assert listings == [] and rm.counters.member_changes == 1
    await rm.aclose()


async def test_a_failing_poll_keeps_the_model_in_sync_and_a_change_seen_after_it_still_reloads() -> None:
    fake = FakeCluster(True, {"m1": "Online", "m3": "Online"})
    listings: list[tuple[str, str]] = []
    rm = _mirror(fake, listings)
    await rm._take_members()
    fake.fail = TimeoutError("the cluster is slow")
    fake.statuses["m3"] = "Offline"
    await rm._poll_members(rm._gap)
    await _settled(rm)
    assert rm.synced and listings == [] and rm.members == {"m1": "Online", "m3": "Online"}
    fake.fail = None
    await rm._poll_members(rm._gap)
    await _settled(rm)
    assert rm.synced and len(listings) == 2 and rm.members == {"m1": "Online", "m3": "Offline"}
    await rm.aclose()


async def test_a_poll_answered_after_the_stream_dropped_is_not_applied() -> None:
    fake = FakeCluster(True, {"m1": "Online", "m3": "Online"})
    listings: list[tuple[str, str]] = []
    rm = _mirror(fake, listings)
    await rm._take_members()
    gap = rm._gap
    gap.set()  # the reload that follows takes the members again before its listings
    fake.statuses["m3"] = "Offline"
    await rm._poll_members(gap)
    assert listings == [] and rm.members == {"m1": "Online", "m3": "Online"}
    await rm.aclose()


@pytest.mark.parametrize("clustered", [True, False])
async def test_the_members_are_polled_on_an_interval_while_in_sync_and_never_on_a_standalone_remote(
        clustered: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_mod, "MEMBER_POLL", 0.05)
    fake = FakeCluster(clustered, {"m1": "Online", "m3": "Online"} if clustered else {})
    listings: list[tuple[str, str]] = []
    rm = _mirror(fake, listings)
    await rm._take_members()
    keep = asyncio.create_task(rm._keep())
    await asyncio.sleep(0.2)
    fake.statuses["m3"] = "Offline"
    await asyncio.sleep(0.2)
    rm._gap.set()
    await keep
    await _settled(rm)
    if clustered:
        assert fake.member_reads >= 5, fake.member_reads
        assert set(listings) == {("default", "instances"), ("p2", "instances")}  # and again while it settles
        assert rm.counters.member_changes == 1
    else:
        assert fake.member_reads == 0 and listings == []
    await rm.aclose()


def test_the_model_stats_count_the_polls_and_the_changes() -> None:
    mirror = Mirror(lambda name: SimpleNamespace(), [], enabled=True)  # type: ignore[arg-type, return-value]
    rm = RemoteMirror("r", SimpleNamespace(project="default"), [])  # type: ignore[arg-type]
    rm.counters.member_polls, rm.counters.member_changes = 7, 2
    mirror.remotes["r"] = rm
    stats = mirror.stats()["r"]
    assert (stats["member_polls"], stats["member_changes"]) == (7, 2)
