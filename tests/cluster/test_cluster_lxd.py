"""The gateway in front of a real 3-member LXD cluster: its members, placement with `?target=`, `location` on every
container, default placement, images found and copied within the cluster."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.locallxd.cluster import LocalCluster
from app.locallxd.daemon import DaemonInfo
from app.lxd import Client
from app.main import create_app
from app.settings import ImageSourceSettings
from tests.cluster.conftest import MEMBERS, create_on
from tests.support.lxd_cluster import CLUSTER_REMOTE, cluster_settings

PROBLEM = "application/problem+json"


def test_every_member_is_online_and_trusts_the_client_certificate(cluster: LocalCluster) -> None:
    info = cluster.info
    assert info is not None and [m.name for m in info.members] == MEMBERS
    assert len({m.address for m in info.members}) == 3
    for member in info.members:
        ctx = ssl.create_default_context(cafile=info.server_cert)  # the cluster certificate, pinned
        ctx.check_hostname = False
        ctx.load_cert_chain(info.client_cert, info.client_key)
        with httpx.Client(base_url=member.url, verify=ctx, timeout=10) as c:
            server = c.get("/1.0").json()["metadata"]
            assert server["auth"] == "trusted"
            assert server["environment"]["server_clustered"] is True
            assert server["environment"]["server_name"] == member.name
            assert server["environment"]["certificate_fingerprint"] == info.server_fingerprint
            members = c.get("/1.0/cluster/members", params={"recursion": 1}).json()["metadata"]
            assert sorted((m["server_name"], m["status"]) for m in members) == [(n, "Online") for n in MEMBERS]


async def test_cluster_members_route(cluster_client: httpx.AsyncClient, cluster: LocalCluster) -> None:
    assert cluster.info is not None
    r = await cluster_client.get("/v1/cluster/members")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["next_cursor"] is None
    assert [m["name"] for m in page["items"]] == MEMBERS
    for m, info in zip(page["items"], cluster.info.members, strict=True):
        assert m["url"] == info.url and m["status"] == "Online" and m["remote"] == CLUSTER_REMOTE
        assert "database" in m["roles"] and m["message"]
    first = (await cluster_client.get("/v1/cluster/members", params={"limit": 2})).json()
    assert [m["name"] for m in first["items"]] == ["m1", "m2"] and first["next_cursor"]
    rest = (await cluster_client.get("/v1/cluster/members", params={"limit": 2, "cursor": first["next_cursor"]})
            ).json()
    assert [m["name"] for m in rest["items"]] == ["m3"]
    r = await cluster_client.get("/v1/server")
    assert r.status_code == 200 and r.json()["clustered"] is True


async def test_cluster_members_of_a_standalone_remote_is_a_conflict(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/cluster/members")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["type"].endswith("/not-clustered") and "'local'" in problem["detail"]


async def test_placement_location_and_default_placement(cluster_client: httpx.AsyncClient, m1: Client,
                                                        names: str) -> None:
    jobs = await asyncio.gather(*(create_on(cluster_client, f"{names}-{m}", target=m) for m in MEMBERS),
                                create_on(cluster_client, f"{names}-any"))
    for job, where in zip(jobs, [*MEMBERS, None], strict=True):
        assert job["status"] == "succeeded", job
        result = job["result"]
        assert result["status"] == "Running"
        assert result["location"] == where if where else result["location"] in MEMBERS
    for m in MEMBERS:  # LXD agrees, and the gateway's own reads say the same
        assert (await m1.instances.get(f"{names}-{m}")).location == m
        r = await cluster_client.get(f"/v1/containers/{names}-{m}")
        assert r.status_code == 200 and r.json()["location"] == m
        r = await cluster_client.get(f"/v1/containers/{names}-{m}", headers={"Cache-Control": "no-cache"})
        assert r.status_code == 200 and r.json()["location"] == m
    listed = (await cluster_client.get("/v1/containers", params={"prefix": names})).json()["items"]
    assert {i["name"]: i["location"] for i in listed if i["name"] != f"{names}-any"} == {
        f"{names}-{m}": m for m in MEMBERS}
    assert all(i["location"] in MEMBERS for i in listed) and len(listed) == 4

    r = await cluster_client.post(f"/v1/containers/{names}-m3/exec", params={"wait": 60},
                                  json={"command": ["hostname"]})
    assert r.status_code == 200 and r.json()["result"]["stdout"].strip() == f"{names}-m3", r.text

    r = await cluster_client.post("/v1/containers", params={"target": "m9", "wait": 60},
                                  json={"name": f"{names}-nowhere", "image": {"alias": "busybox"}})
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["type"].endswith("/member-not-found") and "'m9'" in r.json()["detail"]
    assert r.json()["members"] == MEMBERS


async def test_image_found_in_the_cluster_and_copied_into_it(tmp_path: Path, cluster: LocalCluster, m1: Client,
                                                             image_server: DaemonInfo, names: str) -> None:
    assert cluster.info is not None
    source = ImageSourceSettings(name="lgw-images", url=image_server.https_url, protocol="lxd",
                                 certificate=Path(image_server.server_cert))
    app = create_app(cluster_settings(tmp_path, cluster.info, image_sources=[source]))
    alias = f"{names}-img"
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw", timeout=60) as gw:
        r = await gw.post("/v1/images/find", json={"alias": "busybox"}, params={"wait": 60})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        assert r.json()["result"]["local"] is True
        assert r.json()["result"]["fingerprint"] == cluster.info.image_fingerprint

        r = await gw.post("/v1/images", params={"wait": 120}, json={
            "source": {"image_source": "lgw-images", "alias": "busybox"}, "aliases": [alias]})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        try:
            assert (await m1.images.alias(alias)).target == image_server.image_fingerprint
            # the copied image is one of the cluster's: a container made from it on another member runs
            job = await create_on(gw, f"{names}-copied", target="m3", image={"fingerprint":
                                                                          image_server.image_fingerprint})
            assert job["status"] == "succeeded" and job["result"]["location"] == "m3", job
        finally:
            await m1.images.delete_alias(alias)
