"""/v1/images and /v1/image-sources against the real private LXD (and Incus), with the second daemon of the same
backend as a configured image source (protocol `lxd` or `incus`, pinned by its certificate): list, get by prefix,
export, aliases with `/`, find (local hit and copy from the source with progress), copy, streamed upload, delete."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import io
import json
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.locallxd.image import build_busybox_image
from app.lxd.client import Client
from app.lxd.images import Image
from app.main import create_app
from app.settings import ImageSourceSettings, Settings
from app.store.tokens import Scope
from tests.support.app import make_settings
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


SOURCE = "lgw-images"


def _settings(tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo, **kw: object) -> object:
    # an `incus`-protocol server for Incus, an `lxd`-protocol one for LXD
    sources = [ImageSourceSettings(name=SOURCE, url=image_server.https_url, protocol=image_server.backend,
                                   certificate=Path(image_server.server_cert)),
               ImageSourceSettings(name="lgw-unused", url="https://127.0.0.1:9", protocol="simplestreams")]
    return make_settings(tmp_path, lxd_daemon, image_sources=sources, **kw)


@pytest.fixture
async def gw(tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(tmp_path, lxd_daemon, image_server))  # type: ignore[arg-type]
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        yield c


@pytest.fixture
async def lxd(lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.unix(lxd_daemon.socket_path) as c:
        yield c


async def _drop_aliases(lxd: Client, *names: str) -> None:
    existing = {a.name for a in await lxd.images.aliases()}
    for n in names:
        if n in existing:
            await lxd.images.delete_alias(n)


async def test_sources_list_get_export(gw: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> None:
    r = await gw.get("/v1/image-sources")
    assert r.status_code == 200
    assert [(s["name"], s["position"]) for s in r.json()["items"]] == [(SOURCE, 0), ("lgw-unused", 1)]
    page = (await gw.get("/v1/image-sources", params={"limit": 1})).json()
    assert page["items"][0]["name"] == SOURCE and page["next_cursor"]
    nxt = (await gw.get("/v1/image-sources", params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert [s["name"] for s in nxt["items"]] == ["lgw-unused"]

    fp = lxd_daemon.image_fingerprint
    r = await gw.get("/v1/images")
    assert r.status_code == 200 and fp in [i["fingerprint"] for i in r.json()["items"]]
    r = await gw.get(f"/v1/images/{fp[:12]}")
    assert r.status_code == 200 and r.json()["fingerprint"] == fp and "busybox" in r.json()["aliases"]
    assert r.headers.get("etag")
    assert (await gw.get("/v1/images/0123456789ab")).status_code == 404

    digest = hashlib.sha256()
    async with gw.stream("GET", f"/v1/images/{fp[:12]}/export") as r:
        assert r.status_code == 200
        async for chunk in r.aiter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == fp  # a unified image's fingerprint is the sha256 of its tarball


async def test_aliases_with_slashes(gw: httpx.AsyncClient, lxd: Client, lxd_daemon: DaemonInfo) -> None:
    name = "lgw/alias/test"
    try:
        r = await gw.post("/v1/images/aliases", json={"name": name, "target": lxd_daemon.image_fingerprint[:10],
                                                      "description": "d"})
        assert r.status_code == 201, r.text
        assert r.json()["target"] == lxd_daemon.image_fingerprint
        assert (await gw.post("/v1/images/aliases", json={"name": name, "target": lxd_daemon.image_fingerprint})
                ).status_code == 409
        r = await gw.get("/v1/images/aliases")
        assert name in [a["name"] for a in r.json()["items"]]
        assert (await gw.delete(f"/v1/images/aliases/{name}")).status_code == 204
        assert (await gw.delete(f"/v1/images/aliases/{name}")).status_code == 404
    finally:
        await _drop_aliases(lxd, name)


@pytest.mark.parametrize("name", ["..", ".", "lgw/../x", "lgw/./x", "lgw//x", "/lgw", "lgw/"])
async def test_alias_name_that_lxd_would_normalise_into_another_path_is_refused(
        gw: httpx.AsyncClient, lxd: Client, lxd_daemon: DaemonInfo, name: str) -> None:
    before = {a.name for a in await lxd.images.aliases()}
    r = await gw.post("/v1/images/aliases", json={"name": name, "target": lxd_daemon.image_fingerprint})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "'..'" in r.json()["detail"]
    encoded = "/".join(seg.replace(".", "%2E") for seg in name.split("/"))
    r = await gw.delete(f"/v1/images/aliases/{encoded}")
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert {a.name for a in await lxd.images.aliases()} == before
    assert (await gw.get(f"/v1/images/{lxd_daemon.image_fingerprint}")).status_code == 200


async def test_find_local_hit_then_copy_from_the_source(gw: httpx.AsyncClient, lxd: Client,
                                                        lxd_daemon: DaemonInfo) -> None:
    r = await gw.post("/v1/images/find", params={"wait": 60}, json={"alias": "busybox", "sources": [SOURCE]})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["kind"] == "image.find" and job["status"] == "succeeded", job
    assert job["result"] == {"fingerprint": lxd_daemon.image_fingerprint, "source": None, "alias": "busybox",
                             "local": True, "copied": False}

    local = "lgw/find/busybox"
    try:
        r = await gw.post("/v1/images/find", params={"wait": 120},
                          json={"alias": "busybox", "local_alias": local, "copy_local": True})
        job = r.json()
        assert job["status"] == "succeeded", job
        assert job["result"]["source"] == SOURCE and job["result"]["alias"] == local
        assert job["result"]["local"] is True and job["result"]["copied"] is True
        assert (await lxd.images.alias(local)).target == job["result"]["fingerprint"]
        assert job["progress"]["message"].startswith(("Retrieving image", "acquiring"))
    finally:
        await _drop_aliases(lxd, local)

    r = await gw.post("/v1/images/find", json={"alias": "busybox", "sources": ["nope"]})
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-image-source")
    assert (await gw.post("/v1/images/find", json={"alias": "a", "series": "jammy"})).status_code == 422


async def test_copy_from_a_configured_source(gw: httpx.AsyncClient, lxd: Client, lxd_daemon: DaemonInfo) -> None:
    alias = "lgw/copy/busybox"
    try:
        r = await gw.post("/v1/images", params={"wait": 120},
                          json={"source": {"image_source": SOURCE, "alias": "busybox"}, "aliases": [alias]})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["kind"] == "image.copy" and job["status"] == "succeeded", job
        assert job["result"]["fingerprint"] == lxd_daemon.image_fingerprint and alias in job["result"]["aliases"]
        assert job["lxd_operations"] and job["lxd_operations"][0]["status"] == "Success"
        assert (await lxd.images.alias(alias)).target == lxd_daemon.image_fingerprint
    finally:
        await _drop_aliases(lxd, alias)
    bad = await gw.post("/v1/images", json={"source": {"alias": "busybox"}})
    assert bad.status_code == 422


@pytest.mark.parametrize("protocol", ["lxd", "incus"])
async def test_a_source_of_either_protocol_name_is_pulled_on_every_copy_path(
        tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo, lxd: Client, protocol: str) -> None:
    """`lxd` and `incus` name one API, and each daemon takes only its own name (Incus refuses `lxd`, LXD 5.0
    refuses `incus`): a source configured under either is pulled in the target daemon's name, by an image find
    with `copy_local`, a copy, and a container create from the source."""
    sources = [ImageSourceSettings(name=SOURCE, url=image_server.https_url, protocol=protocol,  # type: ignore[arg-type]
                                   certificate=Path(image_server.server_cert))]
    remote_alias = f"lgw-remote-{uuid.uuid4().hex[:8]}"
    found, copied = f"lgw/found/{remote_alias}", f"lgw/copied/{remote_alias}"
    container = f"lgwpr-{uuid.uuid4().hex[:6]}"
    app = create_app(make_settings(tmp_path, lxd_daemon, image_sources=sources))
    # an image the target does not have yet: a daemon that has the fingerprint never reads the protocol
    tarball = build_busybox_image(tmp_path / "remote.tar.gz", description=remote_alias)
    async with Client.unix(image_server.socket_path) as server:
        remote = await server.images.upload(tarball, aliases=[remote_alias], public=True)
        assert isinstance(remote, Image) and not await lxd.images.exists(remote.fingerprint)
        try:
            async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                               base_url="http://gw") as gw:
                r = await gw.post("/v1/images/find", params={"wait": 120},
                                  json={"alias": remote_alias, "local_alias": found, "copy_local": True})
                job = r.json()
                assert job["status"] == "succeeded" and job["result"]["copied"] is True, job
                assert (await lxd.images.alias(found)).target == remote.fingerprint
                await lxd.images.delete(remote.fingerprint)  # each path pulls the image afresh

                r = await gw.post("/v1/images", params={"wait": 120}, json={
                    "source": {"image_source": SOURCE, "alias": remote_alias}, "aliases": [copied]})
                assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
                assert (await lxd.images.alias(copied)).target == remote.fingerprint
                await lxd.images.delete(remote.fingerprint)

                image = {"alias": remote_alias, "sources": [SOURCE], "copy_local": False}
                r = await gw.post("/v1/containers", params={"wait": 120},
                                  json={"name": container, "image": image, "start": False})
                assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
                assert (await lxd.instances.get(container)).config["volatile.base_image"] == remote.fingerprint
        finally:
            await server.images.delete(remote.fingerprint)
            await _drop_aliases(lxd, found, copied)
            with contextlib.suppress(Exception):
                await lxd.instances.delete(container)
            with contextlib.suppress(Exception):
                await lxd.images.delete(remote.fingerprint)


async def test_a_failed_copy_names_the_backend_that_refused(gw: httpx.AsyncClient, backend: str) -> None:
    r = await gw.post("/v1/images", params={"wait": 60},
                      json={"source": {"image_source": SOURCE, "fingerprint": "0" * 64}})
    job = r.json()
    assert job["status"] == "failed", job
    title = {"lxd": "LXD", "incus": "Incus"}[backend]
    assert title in job["error"]["title"] and title in job["error"]["detail"], job["error"]


async def test_copy_from_an_unknown_server_needs_admin(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                       image_server: DaemonInfo) -> None:
    app: FastAPI = create_app(_settings(tmp_path, lxd_daemon, image_server, auth_enabled=True))  # type: ignore[arg-type]
    _, writer = app.state.tokens.create("writer", [Scope.read, Scope.write])
    _, admin = app.state.tokens.create("admin", [Scope.admin])
    body = {"source": {"server": "https://images.example.invalid", "alias": "busybox"}}
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        r = await c.post("/v1/images", json=body, headers={"Authorization": f"Bearer {writer}"})
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        r = await c.post("/v1/images", json=body, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 403 and r.json()["type"].endswith("/policy")  # then the policy guard
        assert (await c.get("/v1/jobs", headers={"Authorization": f"Bearer {admin}"})).json()["items"] == []


def _split_image(directory: Path) -> tuple[Path, Path]:
    """A split image: the metadata tarball and the rootfs tarball of a fresh busybox image."""
    unified = build_busybox_image(directory / "unified.tar.gz", description="lgw split")
    metadata, rootfs = directory / "metadata.tar.gz", directory / "rootfs.tar.gz"
    with tarfile.open(unified) as src, tarfile.open(metadata, "w:gz") as meta, tarfile.open(rootfs, "w:gz") as fs:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./").startswith("rootfs"):
                member.name = member.name.lstrip("./")[len("rootfs"):].lstrip("/") or "."
                fs.addfile(member, data)
            elif member.name.lstrip("./") not in ("", "."):
                meta.addfile(member, data)
    return metadata, rootfs


async def test_upload_unified_and_split_then_delete(gw: httpx.AsyncClient, lxd: Client, tmp_path: Path) -> None:
    tarball = build_busybox_image(tmp_path / "up.tar.gz", description="lgw upload")
    fp = hashlib.sha256(tarball.read_bytes()).hexdigest()
    created: list[str] = []
    try:
        async def chunks() -> AsyncIterator[bytes]:
            with open(tarball, "rb") as f:
                while chunk := f.read(1 << 16):
                    yield chunk
                    await asyncio.sleep(0)

        r = await gw.post("/v1/images/upload", params={"aliases": ["lgw/up/one", "lgw/up/two"], "wait": 60},
                          content=chunks(), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["kind"] == "image.import" and job["status"] == "succeeded", job
        created.append(fp)
        assert job["result"]["fingerprint"] == fp
        assert sorted(job["result"]["aliases"]) == ["lgw/up/one", "lgw/up/two"]
        assert not list((tmp_path / "data" / "uploads").glob("*/*"))  # the spool is gone

        metadata, rootfs = _split_image(tmp_path)
        split_fp = hashlib.sha256(metadata.read_bytes() + rootfs.read_bytes()).hexdigest()
        files = {"metadata": ("metadata.tar.gz", metadata.read_bytes(), "application/octet-stream"),
                 "rootfs": ("rootfs.tar.gz", rootfs.read_bytes(), "application/octet-stream")}
        req = httpx.Request("POST", "http://gw/v1/images/upload", files=files, params={"wait": 60})
        r = await gw.post("/v1/images/upload", params={"wait": 60}, content=req.read(),
                          headers={"Content-Type": req.headers["content-type"]})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded", r.json()
        created.append(split_fp)
        assert r.json()["result"]["fingerprint"] == split_fp

        bad = await gw.post("/v1/images/upload", content=b"x", headers={"Content-Type": "text/plain"})
        assert bad.status_code == 415
        mismatch = await gw.post("/v1/images/upload", content=io.BytesIO(b"abc").read(),
                                 headers={"Content-Type": "application/octet-stream", "Content-SHA256": "0" * 64})
        assert mismatch.status_code == 400 and mismatch.json()["type"].endswith("/content-sha256-mismatch")

        for f in list(created):
            r = await gw.delete(f"/v1/images/{f[:16]}", params={"wait": 60})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            assert r.json()["kind"] == "image.delete"
            created.remove(f)
            assert (await gw.get(f"/v1/images/{f}")).status_code == 404
        assert (await gw.delete(f"/v1/images/{fp}")).status_code == 404
    finally:
        for f in created:
            await lxd.images.delete(f)


def _rss_kib(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")))


def test_a_split_upload_with_a_200_mib_part_header_is_refused_at_once(tmp_path: Path,
                                                                      lxd_daemon: DaemonInfo) -> None:
    part = b'--bomb\r\nContent-Disposition: form-data; name="metadata"; filename="m.tar"\r\nX-Padding: '
    size = 200 * 2**20
    with running_gateway(lxd_daemon.socket_path, tmp_path) as gw:
        pid = gw.proc.pid
        before = _rss_kib(pid)
        peak = [before]
        done = threading.Event()

        def attack(s: socket.socket) -> None:
            s.sendall(b"POST /v1/images/upload HTTP/1.1\r\nHost: gw\r\nContent-Type: multipart/form-data; "
                      b"boundary=bomb\r\nContent-Length: " + str(len(part) + size).encode() + b"\r\n\r\n" + part)
            with contextlib.suppress(OSError):  # the gateway may close the connection once it has answered
                for _ in range(size // 2**20):
                    s.sendall(b"a" * 2**20)
            done.set()

        def watch() -> None:
            while not done.wait(0.05):
                peak.append(_rss_kib(pid))

        with socket.create_connection(("127.0.0.1", gw.port)) as s:
            s.settimeout(30)
            t0 = time.monotonic()
            threads = [threading.Thread(target=attack, args=(s,)), threading.Thread(target=watch)]
            for t in threads:
                t.start()
            answer = http.client.HTTPResponse(s)
            answer.begin()
            answered_after = time.monotonic() - t0
            body = answer.read()
            done.wait(30)
            for t in threads:
                t.join(30)
        assert answer.status == 400, body
        assert answer.getheader("content-type") == "application/problem+json"
        problem = json.loads(body)
        assert problem["type"].endswith("/bad-upload") and "header" in problem["detail"]
        assert answered_after < 5
        assert max(peak) - before < 64 * 1024, (before, max(peak))
        assert not list((tmp_path / "uploads").glob("*/*"))  # nothing is left of the spool
        assert httpx.get(f"{gw.base}/livez", timeout=5).status_code == 200


def test_an_upload_over_the_default_limit_is_413(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    assert Settings.model_fields["max_upload_bytes"].default == 4 * 2**30
    with running_gateway(lxd_daemon.socket_path, tmp_path) as gw:
        for ctype in (b"application/octet-stream", b"multipart/form-data; boundary=b"):
            with socket.create_connection(("127.0.0.1", gw.port)) as s:
                s.settimeout(10)
                s.sendall(b"POST /v1/images/upload HTTP/1.1\r\nHost: gw\r\nContent-Type: " + ctype +
                          b"\r\nContent-Length: " + str(4 * 2**30 + 1).encode() + b"\r\n\r\n" + b"x" * 65536)
                answer = http.client.HTTPResponse(s)
                answer.begin()
                body = answer.read()
            assert answer.status == 413, body
            assert answer.getheader("content-type") == "application/problem+json" and json.loads(body)["status"] == 413
        # just under the limit is taken in: a small upload streams through as before
        r = httpx.post(f"{gw.base}/v1/images/upload", content=b"not an image", timeout=30,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
