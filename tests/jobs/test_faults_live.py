"""Real faults: the LXD daemon killed mid-job, then back; an HTTPS remote that stops answering.

Each test runs its own throwaway daemon, so killing or freezing it harms nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import DaemonInfo, LocalDaemon
from app.locallxd.image import build_busybox_image
from app.main import create_app
from app.settings import RemoteSettings, Settings
from tests.support.gateway import serving

pytestmark = pytest.mark.lxd



def _kill_daemon(daemon: LocalDaemon) -> None:
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app on a real loopback port (websockets need one), plus a client for it."""
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as c:
        yield c, f"ws://{address}"


async def test_lxd_killed_mid_create_then_back(tmp_path: Path, victim: tuple[LocalDaemon, DaemonInfo]) -> None:
    daemon, info = victim
    # A big image makes the create take a while, so the kill lands in the middle of it.
    big = build_busybox_image(tmp_path / "big.tar.gz", pad_mb=150)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=info.socket_path),
                                 base_url="http://lxd", timeout=120) as raw:
        op = (await raw.post("/1.0/images", content=big.read_bytes(),
                             headers={"Content-Type": "application/octet-stream"})).json()
        done = (await raw.get(f"{op['operation']}/wait", params={"timeout": 120})).json()["metadata"]
        await raw.post("/1.0/images/aliases", json={"name": "big", "target": done["metadata"]["fingerprint"]})
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", auth_enabled=False,  # type: ignore[call-arg]
                        lxd_timeout_seconds=5,
                        remotes=[RemoteSettings(name="victim", url=f"unix://{info.socket_path}", default=True)])
    app = create_app(settings)
    async with LifespanManager(app, shutdown_timeout=60), _serve(app) as (c, ws_base):
        events = await websockets.connect(f"{ws_base}/v1/events?type=lifecycle")
        name = f"f-{uuid.uuid4().hex[:8]}"
        r = await c.post("/v1/containers", json={"name": name, "image": {"alias": "big"}})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30  # kill once LXD has taken the create (not while the image is looked up)
        while not (await c.get(f"/v1/jobs/{job_id}")).json()["lxd_operations"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        _kill_daemon(daemon)

        job = (await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
        assert job["status"] == "failed", job
        assert job["error"]["status"] in (502, 503, 504), job["error"]
        assert job["error"]["detail"], job["error"]
        assert job["cleanup"]["status"] == "pending", job  # the half-made container could not be removed yet

        assert (await c.get("/livez")).status_code == 200  # the gateway keeps answering
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and "'victim'" in ready.json()["detail"]
        down = await c.get("/v1/containers")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"

        daemon.start()  # LXD comes back; the gateway is not restarted
        deadline = time.monotonic() + 30
        while (await c.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "readyz did not recover"
            await asyncio.sleep(0.5)
        while (job := (await c.get(f"/v1/jobs/{job_id}")).json())["cleanup"]["status"] != "done":
            assert time.monotonic() < deadline + 30, job
            await asyncio.sleep(0.5)
        assert job["status"] == "failed", job
        assert (await c.get(f"/v1/containers/{name}")).status_code == 404, job
        second = f"f-{uuid.uuid4().hex[:8]}"
        r = await c.post("/v1/containers", params={"wait": 120}, json={"name": second,
                                                                      "image": {"alias": "busybox"}})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text

        # The events stream reconnected by itself: the new container's lifecycle events arrive.
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(second in s for s in seen):
            try:
                seen.append(await asyncio.wait_for(events.recv(), 2))  # type: ignore[arg-type]
            except TimeoutError:
                continue
        assert any(second in s for s in seen), seen[-5:]
        await events.close()
        for n in (name, second):
            await c.delete(f"/v1/containers/{n}", params={"wait": 60})


async def test_https_remote_that_stops_answering_gives_504_not_a_hang(
        tmp_path: Path, victim: tuple[LocalDaemon, DaemonInfo]) -> None:
    daemon, info = victim
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", auth_enabled=False,  # type: ignore[call-arg]
                        lxd_timeout_seconds=2, remotes=[RemoteSettings(
                            name="far", url=info.https_url, client_cert=Path(info.client_cert),
                            client_key=Path(info.client_key), server_cert=Path(info.server_cert), default=True)])
    app = create_app(settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw", timeout=60) as c:
        live = {"Cache-Control": "no-cache"}  # a live read (the read model may still answer for a few seconds)
        deadline = time.monotonic() + 30
        while (await c.get("/v1/containers")).headers.get("x-gateway-cache") != "hit":
            assert time.monotonic() < deadline, "the read model did not load"  # its reads are done: none holds
            await asyncio.sleep(0.2)  # a connection that the request below would then have to open afresh
        assert (await c.get("/v1/containers", headers=live)).status_code == 200  # connections are open and warm
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            start = time.monotonic()
            r = await c.get("/v1/containers", headers=live)
            elapsed = time.monotonic() - start
            assert r.status_code == 504, r.text  # LXD took the request but is too slow
            assert r.headers["content-type"] == "application/problem+json"
            assert "'far'" in r.json()["detail"]
            assert elapsed < 20, f"took {elapsed:.1f}s"
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and "'far'" in ready.json()["detail"]
            # The read model notices a frozen LXD (its events stream answers no ping) and stops answering from
            # memory: plain reads go to LXD too, and so time out, well within 20 s (pings every 5 s).
            while (r := await c.get("/v1/containers")).status_code == 200:
                assert r.headers["x-gateway-cache"] == "hit"
                assert time.monotonic() - frozen < 20, "the model kept answering for a frozen LXD"
                await asyncio.sleep(0.5)
            assert r.status_code in (503, 504) and "'far'" in r.json()["detail"], r.text  # a clear problem
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while (r := await c.get("/v1/containers")).status_code != 200 or r.headers["x-gateway-cache"] != "hit":
            assert time.monotonic() < deadline, r.text  # LXD back: the model reloads and answers again
            await asyncio.sleep(0.5)
