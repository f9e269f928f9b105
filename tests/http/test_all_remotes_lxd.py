"""`?remote=*` (app/http/fanout.py): one listing across every remote, on real daemons. A gateway with three
remotes (the session's 3-member LXD cluster, the session's Incus, and a standalone LXD of the test's own) lists
across all three; when the standalone LXD is killed, the answer is still 200 with the others' items and the dead one
named in `unreachable`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.cluster import LocalCluster
from app.locallxd.daemon import DaemonInfo, LocalDaemon
from app.main import create_app
from app.settings import RemoteSettings, Settings
from app.store.tokens import Scope
from tests.containers.support import unique
from tests.support.app import model_in_sync
from tests.support.lxd_cluster import cluster_remote
from tests.support.lxd_env import HarnessEnvironment
from tests.support.secured_gateway import secured_gateway

LIVE = {"Cache-Control": "no-cache"}


async def _all_pages(c: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(100):
        r = await c.get(path, params={**params, "remote": "*", "cursor": cursor}, headers=LIVE)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["unreachable"] == [], body
        items.extend(body["items"])
        if not (cursor := body["next_cursor"]):
            return items
    raise AssertionError("more than 100 pages")


@pytest.fixture
async def three(tmp_path: Path, cluster: LocalCluster, incus_env: HarnessEnvironment,
                victim: tuple[LocalDaemon, DaemonInfo]) -> Any:
    assert cluster.info is not None
    remotes = [cluster_remote(cluster.info, name="here", default=True),
               RemoteSettings(name="inc", url=f"unix://{incus_env.main.socket_path}"),
               RemoteSettings(name="spare", url=f"unix://{victim[1].socket_path}")]
    app = create_app(Settings(_env_file=None, remotes=remotes, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                              auth_enabled=False, lxd_timeout_seconds=5))
    async with LifespanManager(app, shutdown_timeout=30):
        await model_in_sync(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     timeout=120) as c:
            yield c, victim[0]


async def test_lists_across_lxd_incus_and_a_third_remote_then_names_the_one_killed(three: Any) -> None:
    c, spare = three
    prefix = unique("fan")
    made = [("spare", f"{prefix}-a"), ("spare", f"{prefix}-b"), ("inc", f"{prefix}-c"), ("here", f"{prefix}-d")]
    try:
        for remote, name in made:
            r = await c.post("/v1/containers", params={"remote": remote, "wait": 120},
                             json={"name": name, "image": {"alias": "busybox"}})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text

        # The remotes as GET /v1/remotes describes them: a cluster of three, Incus, a standalone LXD.
        described = {r["name"]: r for r in (await c.get("/v1/remotes")).json()["items"]}
        assert described["here"]["clustered"] is True and len(described["here"]["members"]) == 3
        assert {m["status"] for m in described["here"]["members"]} == {"Online"}
        assert described["inc"]["backend"] == "incus" and described["inc"]["clustered"] is False
        assert described["spare"]["backend"] == "lxd" and described["spare"]["members"] is None

        # Containers: every item carries its remote; sorted by remote, then name; the filter applies on every remote;
        # pages of one item walk the whole merged list.
        listed = await _all_pages(c, "/v1/containers", prefix=prefix, limit=1)
        assert [(i["remote"], i["name"]) for i in listed] == sorted(made)
        r = await c.get("/v1/containers", params={"remote": "*", "prefix": prefix, "limit": 2})
        first = r.json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        r = await c.get("/v1/containers", params={"remote": "*", "prefix": "other", "cursor": first["next_cursor"]})
        assert r.status_code == 400 and r.json()["type"].endswith("/bad-cursor"), r.text  # made for other filters

        # Profiles, images, networks, storage pools, projects: each remote's own, tagged.
        for path in ("/v1/profiles", "/v1/images", "/v1/networks", "/v1/storage-pools", "/v1/projects"):
            items = await _all_pages(c, path)
            assert {i["remote"] for i in items} >= {"here", "inc", "spare"} - ({"here"} if path == "/v1/networks"
                                                                       else set()), (path, items)
        profiles = await _all_pages(c, "/v1/profiles")
        assert sorted(i["remote"] for i in profiles if i["name"] == "default") == ["here", "inc", "spare"]

        # One remote dies: the answer is still 200, with the others' items and the dead one named.
        assert spare.proc is not None
        os.kill(spare.proc.pid, signal.SIGKILL)
        spare.proc.wait(timeout=30)
        for path in ("/v1/containers", "/v1/profiles", "/v1/storage-pools"):
            start = time.monotonic()
            r = await c.get(path, params={"remote": "*", "prefix": prefix} if path == "/v1/containers"
                            else {"remote": "*"}, headers=LIVE)
            elapsed = time.monotonic() - start
            assert r.status_code == 200, r.text
            body = r.json()
            assert {i["remote"] for i in body["items"]} == {"here", "inc"}, (path, body)
            assert [u["remote"] for u in body["unreachable"]] == ["spare"], body
            problem = body["unreachable"][0]["problem"]
            assert problem["status"] in (503, 504) and "'spare'" in problem["detail"], problem
            assert elapsed < 15, f"{path} took {elapsed:.1f}s"
        r = await c.get("/v1/containers", params={"remote": "*", "prefix": prefix}, headers=LIVE)
        assert sorted(i["name"] for i in r.json()["items"]) == [f"{prefix}-c", f"{prefix}-d"]
    finally:
        for remote, name in made:
            if remote != "spare":
                await c.delete(f"/v1/containers/{name}", params={"remote": remote, "wait": 60})


async def test_a_token_lists_only_the_remotes_it_may_use(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    """The secured gateway has two remotes on one LXD (`local`, `tls`): a token limited to `tls` lists `tls` alone,
    and nothing is said of `local` (not even that it exists); a token for both sees the container twice."""
    async with secured_gateway(tmp_path, lxd_daemon, unique("fan")) as gw:
        await model_in_sync(gw.app)
        both = gw.token("reader", Scope.read)
        tls_only = gw.token("tls-only", Scope.read, remotes=["tls"])
        async with gw.http(both) as c:
            r = await c.get("/v1/containers", params={"remote": "*", "prefix": gw.container})
            assert r.status_code == 200, r.text
            assert sorted(i["remote"] for i in r.json()["items"]) == ["local", "tls"]
        async with gw.http(tls_only) as c:
            r = await c.get("/v1/containers", params={"remote": "*", "prefix": gw.container})
            assert r.status_code == 200, r.text
            assert [i["remote"] for i in r.json()["items"]] == ["tls"] and r.json()["unreachable"] == []
        async with gw.http(None) as c:
            r = await c.get("/v1/containers", params={"remote": "*"})
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", r.text
        async with gw.http(both) as c:
            r = await c.get("/v1/containers", params={"remote": "*", "watch": "true"})
            assert r.status_code == 400 and "one remote" in r.json()["detail"], r.text
            r = await c.get("/v1/containers", params={"remote": "*", "limit": "0"})
            assert r.status_code == 400, r.text
            r = await c.get("/v1/containers/" + gw.container, params={"remote": "*"})
            assert r.status_code == 404 and r.json()["type"].endswith("/unknown-remote"), r.text


async def test_a_token_limited_to_a_project_lists_that_project_on_every_remote_and_nothing_else(
        tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    """A token limited to one project: `?remote=*` in that project lists it on both remotes; in another project (or
    the default one) the answer is the 403 a single remote gives, not a 200 naming every remote unreachable."""
    async with secured_gateway(tmp_path, lxd_daemon, unique("fanp")) as gw:
        project = unique("fanproj")
        await gw.lxd.projects.create(project, config={"features.images": "false", "features.profiles": "false"})
        try:
            async with gw.http(gw.admin, timeout=130) as c:
                r = await c.post("/v1/containers", params={"project": project, "wait": 120},
                                 json={"name": gw.container, "image": {"alias": "busybox"}, "start": False})
                assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            limited = gw.token("one-project", Scope.read, projects=[project])
            async with gw.http(limited) as c:
                r = await c.get("/v1/containers", params={"remote": "*", "project": project})
                assert r.status_code == 200, r.text
                items = r.json()["items"]
                assert sorted((i["remote"], i["project"], i["name"]) for i in items) == [
                    ("local", project, gw.container), ("tls", project, gw.container)]
                assert r.json()["unreachable"] == []
                for params in ({"remote": "*"}, {"remote": "*", "project": "default"}):
                    r = await c.get("/v1/containers", params=params)
                    assert r.status_code == 403, (params, r.text)
                    assert r.headers["content-type"] == "application/problem+json"
                    assert "unreachable" not in r.json()
        finally:
            async with gw.http(gw.admin, timeout=130) as c:
                await c.delete(f"/v1/containers/{gw.container}", params={"project": project, "wait": 60})
            await gw.lxd.projects.delete(project)
