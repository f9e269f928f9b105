"""/v1/projects against the real private LXD, and a token limited to some projects sees only those."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


async def test_projects_list(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/projects")
    assert r.status_code == 200, r.text
    assert "default" in [p["name"] for p in r.json()["items"]]
    assert (await client.get("/v1/projects", params={"remote": "nope"})).status_code == 404


async def test_projects_follow_the_token_limits(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    app = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True))
    _, secret = app.state.tokens.create("limited", [Scope.read], projects=["lgw-other"])
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        r = await c.get("/v1/projects", params={"project": "lgw-other"}, headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and r.json()["items"] == []
        assert (await c.get("/v1/projects")).status_code == 401
