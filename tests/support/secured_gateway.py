"""A gateway with authentication on, served by uvicorn on loopback in this process (so tests reach its state),
with an admin token and one running container on the real private LXD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.main import create_app
from app.store.tokens import Scope
from tests.containers.support import IMAGE, remove_all
from tests.support.app import make_settings
from tests.support.gateway import serving


@dataclass
class Gateway:
    app: FastAPI
    host: str
    admin: str
    container: str

    def http(self, secret: str | None = None, timeout: float = 60) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.AsyncClient(base_url=f"http://{self.host}", headers=headers, timeout=timeout)

    def token(self, name: str, scope: Scope = Scope.write, **kw: Any) -> str:
        return str(self.app.state.tokens.create(name, [scope], **kw)[1])

    @property
    def lxd(self) -> Client:
        """The gateway's own LXD client of the remote `local`."""
        return self.app.state.remotes.get("local")  # type: ignore[no-any-return]


@asynccontextmanager
async def secured_gateway(tmp: Path, daemon: DaemonInfo, container: str) -> AsyncIterator[Gateway]:
    app = create_app(make_settings(tmp, daemon, auth_enabled=True, rate_limit="", shutdown_grace_seconds=1))
    async with LifespanManager(app, shutdown_timeout=30), serving(app) as host:
        admin = app.state.tokens.create("root", [Scope.admin])[1]
        gateway = Gateway(app, host, admin, container)
        async with gateway.http(admin, timeout=130) as c:
            r = await c.post("/v1/containers", json={"name": container, "image": IMAGE}, params={"wait": 120})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        try:
            yield gateway
        finally:
            await remove_all(daemon.socket_path, container)
