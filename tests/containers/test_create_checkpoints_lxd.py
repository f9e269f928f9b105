"""Crash recovery of `container.create` reads the checkpoints a job recorded, never its progress messages.

Every progress stage and message the create path reports is reworded; a real create job is stopped at one of its
checkpoints (its step hangs there and the gateway shuts down without grace, leaving the job `running` as a dead
gateway would); a new gateway on the same data directory then settles the job from the state of the container on
the real LXD. Each recovery branch ends as it does with the original wording.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.containers import jobs as container_jobs
from app.containers.jobs import CREATE_STEP, CREATED_STEP
from app.jobs import runner as runner_module
from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, NotFound
from app.main import create_app
from tests.support.app import make_settings

STARTED = "started"
"""Where a job is stopped once its container has started: at the read of the container for its result."""


class Reworded:
    """Rewords every progress report of every job and stops a job for good once it reached a checkpoint (or,
    `stop_at=STARTED`, the read of its result)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_at: str) -> None:
        self.originals: list[tuple[str | None, str | None]] = []
        self.stopped = asyncio.Event()
        progress = runner_module._Context.progress
        checkpoint = runner_module._Context.checkpoint
        seen: dict[str, int] = {}

        async def reworded_progress(ctx: Any, stage: str | None, percent: int | float | None = None,
                                    message: str | None = None) -> None:
            self.originals.append((stage, message))
            n = len(self.originals)
            await progress(ctx, f"phase-{n}", percent, f"something else entirely #{n}")

        async def stopping_checkpoint(ctx: Any, step: str, data: Any = None) -> None:
            await checkpoint(ctx, step, data)
            seen[step] = seen.get(step, 0) + 1
            if step == stop_at and seen[step] == 1:
                self.stopped.set()
                await asyncio.Event().wait()  # the gateway dies here

        async def stopping_view(*args: Any, **kwargs: Any) -> dict[str, Any]:
            self.stopped.set()
            await asyncio.Event().wait()  # the gateway dies here
            raise AssertionError("unreachable")

        monkeypatch.setattr(runner_module._Context, "progress", reworded_progress)
        monkeypatch.setattr(runner_module._Context, "checkpoint", stopping_checkpoint)
        if stop_at == STARTED:
            monkeypatch.setattr(container_jobs, "_view", stopping_view)


async def _crash_then_recover(tmp_path: Path, daemon: DaemonInfo, monkeypatch: pytest.MonkeyPatch, *,
                              start: bool, stop_at: str) -> tuple[str, dict[str, Any]]:
    name = f"ck-{uuid.uuid4().hex[:8]}"
    settings = make_settings(tmp_path, daemon, shutdown_grace_seconds=0)
    with monkeypatch.context() as patched:
        reworded = Reworded(patched, stop_at)
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=90), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            r = await c.post("/v1/containers", json={"name": name, "image": {"alias": "busybox"}, "start": start})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            await asyncio.wait_for(reworded.stopped.wait(), 90)
            shown = (await c.get(f"/v1/jobs/{job_id}")).json()
        assert shown["status"] == "running", shown
        assert shown["progress"]["message"].startswith("something else entirely"), shown
        assert ("allocating", "Creating container") in reworded.originals, reworded.originals
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=90), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        job = (await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
    return name, job


async def _gone(lxd: Client, name: str) -> bool:
    try:
        await lxd.instances.get(name)
    except NotFound:
        return True
    return False


async def _remove(lxd: Client, name: str) -> None:
    if not await _gone(lxd, name):
        if (await lxd.instances.get(name)).status == "Running":
            await lxd.instances.stop(name, force=True)
        await lxd.instances.delete(name)


async def test_stopped_before_the_create_request_fails_with_nothing_left(
        tmp_path: Path, lxd_daemon: DaemonInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    name, job = await _crash_then_recover(tmp_path, lxd_daemon, monkeypatch, start=True, stop_at=CREATE_STEP)
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        assert await _gone(lxd, name)
    assert job["status"] == "failed" and job["error"]["type"].endswith("/rolled-back"), job
    assert "nothing was left behind" in job["error"]["detail"], job


async def test_stopped_after_the_create_before_the_start_removes_the_container(
        tmp_path: Path, lxd_daemon: DaemonInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    name, job = await _crash_then_recover(tmp_path, lxd_daemon, monkeypatch, start=True, stop_at=CREATED_STEP)
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        try:
            assert job["status"] == "failed" and job["error"]["type"].endswith("/rolled-back"), job
            assert "unfinished container was removed" in job["error"]["detail"], job
            assert await _gone(lxd, name)
        finally:
            await _remove(lxd, name)


async def test_stopped_once_started_succeeds_with_the_running_container(
        tmp_path: Path, lxd_daemon: DaemonInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    name, job = await _crash_then_recover(tmp_path, lxd_daemon, monkeypatch, start=True, stop_at=STARTED)
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        try:
            assert job["status"] == "succeeded", job
            assert job["result"]["name"] == name and job["result"]["status"] == "Running", job
        finally:
            await _remove(lxd, name)


async def test_stopped_after_creating_a_container_not_to_start_succeeds(
        tmp_path: Path, lxd_daemon: DaemonInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    name, job = await _crash_then_recover(tmp_path, lxd_daemon, monkeypatch, start=False, stop_at=CREATED_STEP)
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        try:
            assert job["status"] == "succeeded", job
            assert job["result"]["name"] == name and job["result"]["status"] == "Stopped", job
        finally:
            await _remove(lxd, name)
