"""Recovery of a `container.create` job left `running` by a dead gateway, for each state its container can be in.

The job rows are written as a gateway that died at that point would have left them (status `running`, the
checkpoints it had reached); the container is put in the matching state on the real LXD. Starting the gateway
then settles the job from what LXD shows.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.containers.jobs import CREATE_STEP, CREATED_STEP
from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, NotFound
from app.main import create_app
from app.store.jobs import DB_NAME, SQLiteJobStore
from tests.support.app import make_settings


async def _left_running(data_dir: Path, name: str, checkpoints: list[str]) -> str:
    store = SQLiteJobStore(data_dir / DB_NAME)
    await store.open()
    try:
        job = Job(id=new_job_id(), kind="container.create", status=JobStatus.running, remote="local",
                  project="default", resource=f"/v1/containers/{name}", created_at=utcnow(), started_at=utcnow())
        await store.insert(job, params={"name": name, "image": {"alias": "busybox"}}, owner_id="dead-gateway",
                           lease_until=0.0)
        for step in checkpoints:
            await store.save_checkpoint(job.id, step, None)
        return job.id
    finally:
        await store.close()


async def _settle(tmp_path: Path, daemon: DaemonInfo, job_id: str) -> dict[str, object]:
    app = create_app(make_settings(tmp_path, daemon))
    async with LifespanManager(app, startup_timeout=90), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        job = (await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
    return dict(job)


async def test_running_container_means_success(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    name = f"rb-{uuid.uuid4().hex[:8]}"
    (tmp_path / "data").mkdir()
    job_id = await _left_running(tmp_path / "data", name, [CREATE_STEP, CREATED_STEP])
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        await lxd.instances.create(name, image="busybox", start=True)
        try:
            job = await _settle(tmp_path, lxd_daemon, job_id)
            assert job["status"] == "succeeded", job
            assert job["result"]["name"] == name and job["result"]["status"] == "Running"  # type: ignore[index]
        finally:
            await lxd.instances.stop(name, force=True)
            await lxd.instances.delete(name)


async def test_half_made_container_is_rolled_back(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    name = f"rb-{uuid.uuid4().hex[:8]}"
    (tmp_path / "data").mkdir()
    job_id = await _left_running(tmp_path / "data", name, [CREATE_STEP])
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        await lxd.instances.create(name, image="busybox")  # created, never started
        job = await _settle(tmp_path, lxd_daemon, job_id)
        assert job["status"] == "failed" and "removed" in job["error"]["detail"], job  # type: ignore[index]
        with pytest.raises(NotFound):
            await lxd.instances.get(name)


async def test_nothing_made_fails_with_the_reason(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    name = f"rb-{uuid.uuid4().hex[:8]}"
    (tmp_path / "data").mkdir()
    job_id = await _left_running(tmp_path / "data", name, [])
    job = await _settle(tmp_path, lxd_daemon, job_id)
    assert job["status"] == "failed" and "nothing was left behind" in job["error"]["detail"], job  # type: ignore[index]
