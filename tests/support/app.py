"""The app end to end through ASGI, against the real private daemon of the test's `backend` (LXD or Incus)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.settings import RemoteSettings, Settings


def make_settings(tmp_path: Path, daemon: DaemonInfo, **overrides: object) -> Settings:
    remotes = [
        RemoteSettings(name="local", url=f"unix://{daemon.socket_path}", default=True),
        RemoteSettings(name="tls", url=daemon.https_url, client_cert=Path(daemon.client_cert),
                       client_key=Path(daemon.client_key), server_cert=Path(daemon.server_cert)),
    ]
    values: dict[str, object] = {"remotes": remotes, "data_dir": tmp_path / "data", "auth_enabled": False}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


async def model_in_sync(app: FastAPI, timeout: float = 20.0) -> None:
    """Wait until the read model of every remote is in sync with its LXD (fails after `timeout`)."""
    mirror = app.state.mirror
    deadline = time.monotonic() + timeout
    while not all(rm.synced for rm in mirror.remotes.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the read model did not get in sync: {mirror.stats()}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def app(tmp_path: Path, lxd_daemon: DaemonInfo) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(tmp_path, lxd_daemon))
    async with LifespanManager(application):
        await model_in_sync(application)
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c
