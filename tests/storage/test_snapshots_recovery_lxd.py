"""Volume-snapshot jobs a dead gateway left `running` are settled at start-up from the volume's snapshots as the
real LXD lists them: a snapshot that was taken makes `volume-snapshot.create` succeed, a missing one makes it fail
(`gateway-restarted`); `volume-snapshot.delete` finishes deleting."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from app.jobs.models import Job, JobStatus, utcnow
from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.main import create_app
from app.store.jobs import DB_NAME, SQLiteJobStore
from tests.support.app import make_settings

POOL = "default"


async def left_running(data_dir: Path, kind: str, params: dict[str, Any]) -> str:
    """A job of `kind` that a gateway which is gone had started (its lease long expired)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = SQLiteJobStore(data_dir / DB_NAME)
    await store.open()
    job = Job(id=secrets.token_hex(16), kind=kind, status=JobStatus.running, remote="local", project="default",
              resource=f"/v1/storage-pools/{POOL}/volumes/{params['volume']}", created_at=utcnow(),
              started_at=utcnow())
    await store.insert(job, params=params, owner_id="a-gateway-that-died", lease_until=0.0)
    await store.close()
    return job.id


async def test_unfinished_volume_snapshot_jobs_are_settled_at_start_up(tmp_path: Path,
                                                                      lxd_daemon: DaemonInfo) -> None:
    volume = f"lgw-vr-{secrets.token_hex(3)}"
    data_dir = tmp_path / "data"
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        await lxd.storage.create_volume(POOL, volume)
        await lxd.storage.create_volume_snapshot(POOL, volume, "taken")
        await lxd.storage.create_volume_snapshot(POOL, volume, "doomed")
    try:
        params = {"pool": POOL, "volume": volume}
        taken = await left_running(data_dir, "volume-snapshot.create", {**params, "snapshot": "taken"})
        lost = await left_running(data_dir, "volume-snapshot.create", {**params, "snapshot": "never"})
        deleted = await left_running(data_dir, "volume-snapshot.delete", {**params, "snapshot": "doomed"})

        app = create_app(make_settings(tmp_path, lxd_daemon))
        async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                           base_url="http://gw") as client:
            jobs = {i: (await client.get(f"/v1/jobs/{i}", params={"wait": 30})).json() for i in (taken, lost, deleted)}
            listed = await client.get(f"/v1/storage-pools/{POOL}/volumes/{volume}/snapshots")

        assert jobs[taken]["status"] == "succeeded", jobs[taken]
        assert jobs[taken]["result"] == {**params, "name": "taken"}
        assert jobs[lost]["status"] == "failed" and jobs[lost]["error"]["type"].endswith("/gateway-restarted")
        assert jobs[deleted]["status"] == "succeeded" and jobs[deleted]["result"] == {**params, "deleted": "doomed"}
        assert [s["name"] for s in listed.json()["items"]] == ["taken"]
    finally:
        async with Client.unix(lxd_daemon.socket_path) as lxd:
            for s in await lxd.storage.volume_snapshots(POOL, volume):
                await lxd.storage.delete_volume_snapshot(POOL, volume, s.name)
            await lxd.storage.delete_volume(POOL, volume)
