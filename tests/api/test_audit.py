"""Every mutating request lands in the audit trail with who, what and how it ended."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.core.tokens import Scope
from app.harness.daemon import DaemonInfo
from app.main import create_app
from tests.api.conftest import make_settings


@pytest.fixture
async def secured(tmp_path: Path, lxd_daemon: DaemonInfo) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True))
    async with LifespanManager(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://gw") as c:
        yield application, c


async def test_mutations_are_audited_reads_are_not(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    _, admin = app.state.tokens.create("ops", [Scope.admin])
    _, reader = app.state.tokens.create("viewer", [Scope.read])
    h_admin = {"Authorization": f"Bearer {admin}", "X-Request-ID": "audit-1"}
    assert (await c.post("/v1/tokens?remote=local", json={"name": "ci", "scopes": ["read"]},
                         headers=h_admin)).status_code == 201
    assert (await c.post("/v1/tokens", json={"name": "x", "scopes": ["read"]},
                         headers={"Authorization": f"Bearer {reader}"})).status_code == 403
    assert (await c.delete("/v1/tokens/ci", headers=h_admin)).status_code == 204
    await c.get("/v1/tokens", headers=h_admin)
    r = await c.get("/v1/audit", headers=h_admin, params={"limit": 2})
    assert r.status_code == 200
    page = r.json()
    assert [(e["method"], e["path"], e["token"], e["outcome"]) for e in page["items"]] == [
        ("DELETE", "/v1/tokens/ci", "ops", "ok"),
        ("POST", "/v1/tokens", "viewer", "refused"),
    ]
    rest = (await c.get("/v1/audit", headers=h_admin, params={"limit": 2, "cursor": page["next_cursor"]})).json()
    first = rest["items"][0]
    assert (first["method"], first["status"], first["remote"], first["request_id"]) == ("POST", 201, "local",
                                                                                        "audit-1")
    assert rest["next_cursor"] is None
    assert (await c.get("/v1/audit", headers={"Authorization": f"Bearer {reader}"})).status_code == 403
    assert (await c.get("/v1/audit", headers=h_admin, params={"cursor": "zz"})).status_code == 400
