"""The pure part of the read model (app/mirror/collection.py): versions, the order of reads (`seq`), resuming a
watch from a version, watchers that overflow, and the gateway's ETags."""

from __future__ import annotations

import pytest

from app.mirror import collection as coll_mod
from app.mirror.collection import Collection, Record, Versions, etag_of, render, stable_part


def _view(name: str, status: str = "Running", **config: str) -> dict[str, object]:
    return {"name": name, "status": status, "config": dict(config)}


def _coll() -> Collection:
    return Collection(Versions())


# -- versions -----------------------------------------------------------------------------------------------------


def test_versions_only_grow_and_a_resume_from_another_process_gets_a_resync() -> None:
    earlier = _coll()
    for i in range(5):
        earlier.put(f"k{i}", _view(f"k{i}"), 1.0, i + 1)
    handed_out = [c.version for c in earlier.history]
    assert handed_out == sorted(handed_out) and len(set(handed_out)) == 5
    later = _coll()  # another process (a restart, another replica): its counter starts elsewhere
    later.put("k0", _view("k0"), 1.0, 1)
    for since in handed_out:
        w, backlog = later.watch(since)
        assert backlog is None  # not one of its versions: the watcher gets the full list
        w.close()


def test_every_change_gets_a_new_version_and_a_read_that_changes_nothing_none() -> None:
    c = _coll()
    v0 = c.version
    assert c.put("a", _view("a"), 1.0, seq=1)
    v1 = c.version
    assert v1 > v0 and c.records["a"].version == v1 and [ch.type for ch in c.history] == ["added"]
    assert c.put("a", _view("a"), 2.0, seq=2)  # the same data read again: no change, only fresher
    assert c.version == v1 and len(c.history) == 1
    assert c.records["a"].fetched == 2.0 and c.records["a"].seq == 2
    assert c.put("a", _view("a", "Stopped"), 3.0, seq=3)
    assert c.version > v1 and c.history[-1].type == "modified" and c.history[-1].data == _view("a", "Stopped")
    assert c.put("a", None, 4.0, seq=4)
    assert "a" not in c.records and c.history[-1].type == "deleted" and c.history[-1].key == "a"
    assert [ch.version for ch in c.history] == sorted({ch.version for ch in c.history})
    assert c.put("never", None, 5.0, seq=5)  # gone and never seen: nothing to tell
    assert len(c.history) == 3


def test_collections_of_one_remote_share_its_version_counter() -> None:
    versions = Versions()
    a, b = Collection(versions), Collection(versions)
    a.put("x", _view("x"), 1.0, 1)
    b.put("y", _view("y"), 1.0, 2)
    assert b.version > a.version  # one order over every collection of the remote


# -- the order of reads ---------------------------------------------------------------------------------------------


def test_a_read_started_earlier_never_replaces_a_later_one() -> None:
    c = _coll()
    assert c.put("a", _view("a", "Running"), 2.0, seq=7)
    assert not c.put("a", _view("a", "Stopped"), 3.0, seq=5)  # answered later, but started before
    assert c.records["a"].data["status"] == "Running" and c.records["a"].seq == 7
    assert c.put("a", _view("a", "Frozen"), 4.0, seq=8)
    assert c.records["a"].data["status"] == "Frozen"


def test_a_read_started_before_a_delete_does_not_bring_the_object_back() -> None:
    c = _coll()
    c.put("a", _view("a"), 1.0, seq=1)
    assert c.put("a", None, 3.0, seq=9)  # read after the delete: gone
    assert not c.put("a", _view("a"), 4.0, seq=8)  # a read started before the delete, answered after it
    assert "a" not in c.records
    assert c.put("a", _view("a", "Stopped"), 5.0, seq=10)  # made again, read after: it is back
    assert c.records["a"].data["status"] == "Stopped"


def test_a_listing_started_before_a_delete_does_not_bring_the_object_back() -> None:
    c = _coll()
    c.replace_all([("a", _view("a")), ("b", _view("b"))], 1.0, seq=1)
    c.put("a", None, 3.0, seq=3)  # an event: `a` was deleted, read again (started as 3)
    c.replace_all([("a", _view("a")), ("b", _view("b", "Stopped"))], 2.0, seq=2)  # listed before the delete
    assert sorted(c.records) == ["b"]
    assert c.records["b"].data["status"] == "Stopped"  # what the listing is the latest read of, it gives


def test_a_listing_keeps_what_was_read_after_it_started() -> None:
    c = _coll()
    c.replace_all([("a", _view("a"))], 1.0, seq=1)
    c.put("new", _view("new"), 3.0, seq=5)  # created and read while the listing below ran
    c.put("a", _view("a", "Stopped"), 3.0, seq=6)
    c.replace_all([("a", _view("a", "Running"))], 2.0, seq=4)  # started before both reads
    assert sorted(c.records) == ["a", "new"]
    assert c.records["a"].data["status"] == "Stopped"
    c.replace_all([("a", _view("a"))], 4.0, seq=7)  # a later listing without `new`: it is gone
    assert sorted(c.records) == ["a"]
    assert [(ch.type, ch.key) for ch in list(c.history)[-2:]] == [("modified", "a"), ("deleted", "new")]
    assert c.loaded and c.loaded_at == 4.0


def test_a_listing_removes_what_it_lacks_and_tells_watchers() -> None:
    c = _coll()
    c.replace_all([("a", _view("a")), ("b", _view("b"))], 1.0, seq=1)
    w, backlog = c.watch(None)
    assert backlog == []
    c.replace_all([("b", _view("b"))], 2.0, seq=2)
    got = w.queue.get_nowait()
    assert (got.type, got.key, got.data) == ("deleted", "a", _view("a"))
    assert w.queue.empty()


# -- resuming a watch -----------------------------------------------------------------------------------------------


def test_a_watch_resumes_with_the_changes_after_its_version() -> None:
    c = _coll()
    c.put("a", _view("a"), 1.0, 1)
    since = c.version
    c.put("b", _view("b"), 1.0, 2)
    c.put("a", None, 1.0, 3)
    w, backlog = c.watch(since)
    assert backlog is not None
    assert [(ch.type, ch.key) for ch in backlog] == [("added", "b"), ("deleted", "a")]
    assert all(ch.version > since for ch in backlog)
    _, none_missed = c.watch(c.version)
    assert none_missed == []
    c.put("c", _view("c"), 1.0, 4)  # later changes reach the watcher itself
    assert w.queue.get_nowait().key == "c"


def test_a_watch_from_before_the_history_kept_must_resync(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _coll()
    first = c.version
    for i in range(coll_mod.HISTORY + 10):
        c.put(f"k{i}", _view(f"k{i}"), 1.0, i + 1)
    assert len(c.history) == coll_mod.HISTORY and c.floor > first
    _, backlog = c.watch(first)
    assert backlog is None  # too old: start again from a full list
    _, backlog = c.watch(c.floor - 1)
    assert backlog is None
    _, backlog = c.watch(c.floor)  # the oldest change kept is the one right after the floor
    assert backlog is not None and len(backlog) == coll_mod.HISTORY
    assert backlog[0].version > c.floor and backlog[-1].version == c.version


def test_a_watch_from_another_process_s_versions_must_resync() -> None:
    old = Versions()
    from_future = old.current + 10**12
    c = _coll()
    _, backlog = c.watch(from_future)  # newer than anything handed out here: not ours
    assert backlog is None
    earlier = Collection(old)
    earlier.put("a", _view("a"), 1.0, 1)
    restarted = _coll()  # a new process: its counter starts elsewhere in its range
    _, backlog = restarted.watch(earlier.version)
    assert backlog is None


def test_an_overflowing_watcher_is_told_to_resync_and_gets_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coll_mod, "WATCH_QUEUE", 4)
    c = _coll()
    w, _ = c.watch(None)
    for i in range(4):
        c.put(f"k{i}", _view(f"k{i}"), 1.0, i + 1)
    assert not w.overflowed and w.queue.full()
    c.put("k4", _view("k4"), 1.0, 5)  # one too many
    assert w.overflowed
    got = [w.queue.get_nowait() for _ in range(w.queue.qsize())]
    assert [ch.type for ch in got] == ["resync"]  # what was queued is in the full list the resync sends
    assert got[-1].version == c.version  # resync from the version of the change that did not fit
    c.put("k5", _view("k5"), 1.0, 6)
    assert w.queue.empty()  # nothing after the resync: the watcher starts over


def test_a_dropped_collection_ends_its_watchers_and_close_stops_them() -> None:
    c = _coll()
    w, _ = c.watch(None)
    c.put("a", _view("a"), 1.0, 1)
    w.end()
    got = [w.queue.get_nowait() for _ in range(w.queue.qsize())]
    assert [ch.type for ch in got] == ["end"] and w.overflowed
    w2, _ = c.watch(None)
    w2.close()
    assert w2 not in c.watchers
    c.put("b", _view("b"), 1.0, 2)
    assert w2.queue.empty()


# -- rendering and ETags --------------------------------------------------------------------------------------------


def test_render_and_etag_cover_the_whole_answer() -> None:
    body, etag = render({"b": 1, "a": "é"})
    assert body == '{"b":1,"a":"é"}'.encode() and etag == etag_of(body)
    assert etag.startswith('"g') and etag.endswith('"')
    assert render({"b": 2, "a": "é"})[1] != etag


def test_a_record_s_etag_names_the_answer_and_apart_what_a_write_changes() -> None:
    def stable(v: dict[str, object]) -> dict[str, object]:
        return {k: x for k, x in v.items() if k != "status"}

    running = Record(_view("a", "Running", **{"user.x": "1"}), 1.0, 1, 1)
    stopped = Record(_view("a", "Stopped", **{"user.x": "1"}), 1.0, 2, 2)
    edited = Record(_view("a", "Running", **{"user.x": "2"}), 1.0, 3, 3)
    e_run, e_stop, e_edit = (r.view("", None, stable)[2] for r in (running, stopped, edited))
    assert len({e_run, e_stop, e_edit}) == 3  # every answer has its own
    assert stable_part(e_run) == stable_part(e_stop)  # a status change: the part If-Match checks holds
    assert stable_part(e_run) != stable_part(e_edit)  # a config change: it does not
    assert stable_part(f"W/{e_run}") == stable_part(e_run)
    assert stable_part('"lxd-etag"') == '"lxd-etag"'  # LXD's own ETag as it is


def test_a_record_s_views_are_made_once_and_an_unchanged_one_is_the_plain_one() -> None:
    rec = Record(_view("a", **{"user.secret": "s"}), 1.0, 1, 1)
    calls: list[int] = []

    def redact(v: dict[str, object]) -> dict[str, object]:
        calls.append(1)
        return {**v, "config": {"user.secret": "***"}}

    plain = rec.view("", None)
    red = rec.view("read", redact)
    assert rec.view("read", redact) is red and len(calls) == 1
    assert red[0]["config"] == {"user.secret": "***"} and red[2] != plain[2]
    same = Record(_view("b"), 1.0, 1, 1)
    assert same.view("read", lambda v: dict(v)) is same.view("", None)


def test_the_keys_remembered_gone_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coll_mod, "GONE", 3)
    c = _coll()
    for i in range(5):
        c.put(f"k{i}", None, 1.0, seq=10 + i)
    assert list(c.gone) == ["k2", "k3", "k4"]
    assert not c.put("k4", _view("k4"), 1.0, seq=1)
    assert c.put("k0", _view("k0"), 1.0, seq=1)  # forgotten: nothing says it is older
