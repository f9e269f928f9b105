"""A create whose LXD is SIGKILLed under it: the job never claims the half-made container was removed while it
still exists; once LXD answers again the removal is retried (in the running gateway, or at the next start) and
the job says so.

Each test runs its own throwaway daemon, so killing it harms nobody else.
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
from asgi_lifespan import LifespanManager

from app.containers.jobs import CREATE_STEP
from app.containers.service import remove_container
from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.locallxd.daemon import DaemonInfo, LocalDaemon
from app.lxd import Client, NotFound
from app.main import create_app
from app.settings import RemoteSettings, Settings
from app.store.jobs import DB_NAME, SQLiteJobStore

pytestmark = pytest.mark.lxd



def _settings(tmp_path: Path, info: DaemonInfo) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", auth_enabled=False,  # type: ignore[call-arg]
                    lxd_timeout_seconds=5,
                    remotes=[RemoteSettings(name="victim", url=f"unix://{info.socket_path}", default=True)])


async def _exists(info: DaemonInfo, name: str) -> bool:
    async with Client.unix(info.socket_path) as lxd:
        try:
            await lxd.instances.get(name)
        except NotFound:
            return False
        return True


def _says_removed(job: dict[str, Any]) -> bool:
    text = f"{(job.get('error') or {}).get('detail')} {(job.get('cleanup') or {}).get('detail')}"
    return "removed again" in text or "was removed" in text


def _kill(daemon: LocalDaemon) -> None:
    """SIGKILL LXD and reap it."""
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(timeout=10)


async def _kill_after_operations(c: httpx.AsyncClient, daemon: LocalDaemon, job_id: str, count: int) -> None:
    """SIGKILL LXD as soon as the job has recorded `count` LXD operations (1: the create, 2: the start)."""
    deadline = time.monotonic() + 60
    while True:
        job = (await c.get(f"/v1/jobs/{job_id}")).json()
        if len(job["lxd_operations"]) >= count:
            break
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.01)
    _kill(daemon)


async def _create_then_kill(c: httpx.AsyncClient, daemon: LocalDaemon, name: str, operations: int) -> str:
    """Ask for container `name`, kill LXD once the job has recorded `operations` LXD operations; the job's id."""
    r = await c.post("/v1/containers", json={"name": name, "image": {"alias": "busybox"}})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    await _kill_after_operations(c, daemon, job_id, operations)
    return job_id


async def _failed_with_pending_cleanup(c: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    job = (await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
    assert job["status"] == "failed", job
    cleanup = job["cleanup"]
    assert cleanup is not None and cleanup["status"] == "pending", job
    assert "could not be removed yet" in cleanup["detail"] and "retried" in cleanup["detail"], cleanup
    assert not _says_removed(job), job
    return dict(job)


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, info: DaemonInfo, *,
                   startup_timeout: float = 5) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on the victim daemon (its data in `tmp_path`), in this process, and a client of it."""
    app = create_app(_settings(tmp_path, info))
    async with LifespanManager(app, startup_timeout=startup_timeout, shutdown_timeout=60), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=90) as c:
        yield c


async def _left_by_a_killed_start(tmp_path: Path, daemon: LocalDaemon, info: DaemonInfo, name: str) -> str:
    """The id of a create of `name` that LXD was killed under at its start (the container exists for sure): the
    job failed, its cleanup pending; the gateway stopped since, LXD still down."""
    async with _gateway(tmp_path, info) as c:
        job_id = await _create_then_kill(c, daemon, name, 2)
        await _failed_with_pending_cleanup(c, job_id)
    return job_id


async def _cleanup_done(c: httpx.AsyncClient, job_id: str, timeout: float, interval: float) -> dict[str, Any]:
    """The job once its cleanup is done (within `timeout` seconds, asked every `interval`)."""
    deadline = time.monotonic() + timeout
    while (job := (await c.get(f"/v1/jobs/{job_id}")).json())["cleanup"]["status"] != "done":
        assert time.monotonic() < deadline, job
        await asyncio.sleep(interval)
    return dict(job)


@pytest.mark.parametrize("operations", [1, 2], ids=["during-create", "during-start"])
async def test_lxd_killed_mid_create_the_container_is_removed_once_lxd_is_back(
        tmp_path: Path, victim: tuple[LocalDaemon, DaemonInfo], operations: int) -> None:
    daemon, info = victim
    name = f"k-{uuid.uuid4().hex[:8]}"
    async with _gateway(tmp_path, info) as c:
        job_id = await _create_then_kill(c, daemon, name, operations)
        await _failed_with_pending_cleanup(c, job_id)
        for _ in range(3):  # LXD stays down: the job keeps saying what is true, the retries keep failing
            await asyncio.sleep(1)
            job = (await c.get(f"/v1/jobs/{job_id}")).json()
            assert job["status"] == "failed" and job["cleanup"]["status"] == "pending", job
            assert not _says_removed(job), job
        attempts = job["cleanup"]["attempts"]
        assert attempts >= 2, job  # retried in the running gateway

        daemon.start()  # LXD comes back; the gateway is not restarted
        deadline = time.monotonic() + 60
        while True:
            job = (await c.get(f"/v1/jobs/{job_id}")).json()
            if job["cleanup"]["status"] == "done":
                break
            assert not _says_removed(job) or not await _exists(info, name), job
            assert time.monotonic() < deadline, f"the cleanup was not retried once LXD was back: {job}"
            await asyncio.sleep(0.5)
        assert job["status"] == "failed", job  # a failed job stays failed
        assert not await _exists(info, name), job
        assert job["cleanup"]["detail"] in (f"container {name!r} was removed", "nothing was left to undo"), job


async def test_a_cleanup_left_pending_is_done_at_the_next_start(
        tmp_path: Path, victim: tuple[LocalDaemon, DaemonInfo]) -> None:
    daemon, info = victim
    name = f"k-{uuid.uuid4().hex[:8]}"
    job_id = await _left_by_a_killed_start(tmp_path, daemon, info, name)

    daemon.start()  # the gateway is down while LXD comes back
    assert await _exists(info, name)  # what the killed create left
    async with _gateway(tmp_path, info, startup_timeout=90) as c:
        job = await _cleanup_done(c, job_id, 30, 0.25)
        assert job["status"] == "failed", job
        assert job["cleanup"]["detail"] == f"container {name!r} was removed", job
        assert not await _exists(info, name)


async def test_a_retried_cleanup_leaves_a_container_made_after_the_job_ended_alone(
        tmp_path: Path, victim: tuple[LocalDaemon, DaemonInfo]) -> None:
    daemon, info = victim
    name = f"k-{uuid.uuid4().hex[:8]}"
    job_id = await _left_by_a_killed_start(tmp_path, daemon, info, name)

    daemon.start()
    async with Client.unix(info.socket_path) as lxd:  # someone replaces the leftover with their own container
        await remove_container(lxd, name)
        await asyncio.sleep(1.1)
        await lxd.instances.create(name, image="busybox", start=False)
    async with _gateway(tmp_path, info, startup_timeout=90) as c:
        job = await _cleanup_done(c, job_id, 30, 0.25)
        assert "was not removed" in job["cleanup"]["detail"], job
        assert await _exists(info, name)


async def test_a_create_left_running_while_lxd_is_down_is_settled_and_cleaned_up_once_lxd_is_back(
        tmp_path: Path, victim: tuple[LocalDaemon, DaemonInfo]) -> None:
    daemon, info = victim
    name = f"k-{uuid.uuid4().hex[:8]}"
    async with Client.unix(info.socket_path) as lxd:  # what a create whose gateway died mid-way left
        await lxd.instances.create(name, image="busybox", start=False)
    store = SQLiteJobStore(tmp_path / "data" / DB_NAME)
    await store.open()
    try:
        job = Job(id=new_job_id(), kind="container.create", status=JobStatus.running, remote="victim",
                  project="default", resource=f"/v1/containers/{name}", created_at=utcnow(), started_at=utcnow())
        await store.insert(job, params={"name": name, "image": {"alias": "busybox"}}, owner_id="dead-gateway",
                           lease_until=0.0)
        await store.save_checkpoint(job.id, CREATE_STEP, None)
    finally:
        await store.close()
    _kill(daemon)

    async with _gateway(tmp_path, info, startup_timeout=90) as c:
        settled = (await c.get(f"/v1/jobs/{job.id}", params={"wait": 60})).json()
        assert settled["status"] == "failed", settled
        assert settled["cleanup"]["status"] == "pending", settled
        assert not _says_removed(settled), settled
        daemon.start()
        settled = await _cleanup_done(c, job.id, 60, 0.5)
        assert settled["status"] == "failed", settled
        assert settled["cleanup"]["detail"] == f"container {name!r} was removed", settled
        assert not await _exists(info, name)
