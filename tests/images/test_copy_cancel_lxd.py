"""Cancelling an `image.copy` job of a ~100 MB image cancels LXD's download and ends the job `cancelled`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import DaemonInfo, image_tarball
from app.lxd import Client, LXDError
from app.lxd.images import Image
from app.main import create_app
from app.settings import ImageSourceSettings
from tests.support.app import make_settings
from tests.support.relay import throttled_proxy


@pytest.fixture
async def big_remote_image(image_server: DaemonInfo) -> AsyncIterator[tuple[str, str]]:
    """A ~100 MB public image on the image server under a unique alias: (alias, fingerprint)."""
    path = await asyncio.to_thread(image_tarball, None, 100)
    alias = f"big-{uuid.uuid4().hex[:8]}"
    async with Client.unix(image_server.socket_path) as remote:
        img = await remote.images.upload(path, aliases=[alias], public=True)
        assert isinstance(img, Image)
        try:
            yield alias, img.fingerprint
        finally:
            with contextlib.suppress(LXDError):
                await remote.images.delete(img.fingerprint)


async def downloading(c: httpx.AsyncClient, job_id: str) -> dict[str, object]:
    """The job, once LXD's download runs: an LXD operation is recorded and LXD's own progress came through."""
    deadline = time.monotonic() + 60
    while True:
        job = (await c.get(f"/v1/jobs/{job_id}")).json()
        if job["lxd_operations"] and (job["progress"]["message"] or "").startswith("Retrieving image"):
            return dict(job)
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def test_cancelling_an_image_copy_job_cancels_the_download(
        tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo,
        big_remote_image: tuple[str, str]) -> None:
    alias, fingerprint = big_remote_image
    async with throttled_proxy(image_server.https_port, 10 * 1024 * 1024) as port:  # ~10 s for the image
        source = ImageSourceSettings(name="slow", url=f"https://127.0.0.1:{port}", protocol="lxd",
                                     certificate=Path(image_server.server_cert))
        app = create_app(make_settings(tmp_path, lxd_daemon, image_sources=[source]))
        async with LifespanManager(app, shutdown_timeout=60), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as c:
            r = await c.post("/v1/images", json={"source": {"image_source": "slow", "alias": alias},
                                                 "aliases": [f"copy-{alias}"]})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            job = await downloading(c, job_id)
            op_id = job["lxd_operations"][0]["id"]  # type: ignore[index]
            cancel = await c.delete(f"/v1/jobs/{job_id}")
            assert cancel.status_code in (200, 202), cancel.text
            job = (await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
            assert job["status"] == "cancelled", json.dumps(job)
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        with contextlib.suppress(LXDError):  # LXD forgets finished operations after 5 s
            op = await lxd.operations.get(op_id)
            # LXD 5.0 ends a cancelled download as a failure "context canceled"; newer ones as Cancelled (401).
            assert op.status_code == 401 or (op.status_code == 400 and "cancel" in op.err), op
        assert not await lxd.images.exists(fingerprint)


async def test_cancelling_an_image_find_job_cancels_its_download(
        tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo,
        big_remote_image: tuple[str, str]) -> None:
    alias, fingerprint = big_remote_image
    async with throttled_proxy(image_server.https_port, 10 * 1024 * 1024) as port:
        source = ImageSourceSettings(name="slow", url=f"https://127.0.0.1:{port}", protocol="lxd",
                                     certificate=Path(image_server.server_cert))
        app = create_app(make_settings(tmp_path, lxd_daemon, image_sources=[source]))
        async with LifespanManager(app, shutdown_timeout=60), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as c:
            r = await c.post("/v1/images/find", json={"alias": alias, "sources": ["slow"], "copy_local": True})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            await downloading(c, job_id)
            assert (await c.delete(f"/v1/jobs/{job_id}")).status_code in (200, 202)
            job = (await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
            assert job["status"] == "cancelled", json.dumps(job)
            assert job["lxd_operations"][0]["status"] != "Success", job
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        assert not await lxd.images.exists(fingerprint)
