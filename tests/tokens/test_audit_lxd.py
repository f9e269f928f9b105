"""Every mutating request lands in the audit trail with who, what and how it ended."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from websockets.exceptions import InvalidStatus

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings
from tests.support.gateway import serving


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


async def test_audit_records_the_remote_and_project_a_request_resolved_to(
        secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    _, admin = app.state.tokens.create("ops", [Scope.admin])
    name = f"lgw-au{secrets.token_hex(3)}"
    h = {"Authorization": f"Bearer {admin}"}
    try:
        assert (await c.post("/v1/profiles", json={"name": name}, headers=h)).status_code == 201
        assert (await c.delete(f"/v1/profiles/{name}", params={"remote": "tls"}, headers=h)).status_code == 204
    finally:
        await c.delete(f"/v1/profiles/{name}", headers=h)
    items = (await c.get("/v1/audit", headers=h)).json()["items"]
    rows = [(e["method"], e["remote"], e["project"]) for e in items if e["path"] == f"/v1/profiles/{name}"
            or (e["path"] == "/v1/profiles" and e["method"] == "POST")]
    assert ("POST", "local", "default") in rows  # nothing in the query: the default remote and project
    assert ("DELETE", "tls", "default") in rows


async def test_a_flood_of_unauthenticated_requests_is_429_and_cannot_flood_the_audit_trail(
        tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    app = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True, auth_failure_rate_limit="5/minute"))
    async with LifespanManager(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 4000)),
                              base_url="http://gw") as attacker, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.8", 4000)),
                              base_url="http://gw") as other:
        answers = await asyncio.gather(*(attacker.post("/v1/containers", json={"name": "x", "image": {"alias": "a"}},
                                                       headers={"Authorization": "Bearer nope"} if i % 2 else {})
                                         for i in range(300)))
        codes = Counter(r.status_code for r in answers)
        assert codes == {401: 5, 429: 295}, codes
        limited = next(r for r in answers if r.status_code == 429)
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["content-type"].startswith("application/problem+json")
        # another address is not limited, and a valid token from the limited address still works
        assert (await other.post("/v1/containers", json={})).status_code == 401
        _, admin = app.state.tokens.create("ops", [Scope.admin])
        h = {"Authorization": f"Bearer {admin}"}
        assert (await attacker.post("/v1/tokens", json={"name": "t", "scopes": ["read"]}, headers=h)).status_code == 201
        items = (await attacker.get("/v1/audit", headers=h, params={"limit": 1000})).json()["items"]
        assert Counter((e["path"], e["status"], e["token"]) for e in items) == {
            ("/v1/containers", 401, None): 6, ("/v1/tokens", 201, "ops"): 1}


async def test_an_exec_session_refused_in_the_handshake_is_audited(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    app = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True))
    async with LifespanManager(app), serving(app) as host:
        _, admin = app.state.tokens.create("ops", [Scope.admin])
        _, reader = app.state.tokens.create("viewer", [Scope.read])
        for headers in ({}, {"Authorization": f"Bearer {reader}"}):
            with pytest.raises(InvalidStatus):
                async with websockets.connect(f"ws://{host}/v1/containers/web1/exec/ws",
                                              additional_headers=headers) as ws:
                    await ws.recv()
        async with httpx.AsyncClient(base_url=f"http://{host}") as c:
            items = (await c.get("/v1/audit", headers={"Authorization": f"Bearer {admin}"})).json()["items"]
    rows = [(e["method"], e["path"], e["token"], e["status"], e["outcome"]) for e in items]
    assert rows == [("WEBSOCKET", "/v1/containers/web1/exec/ws", "viewer", 403, "refused"),
                    ("WEBSOCKET", "/v1/containers/web1/exec/ws", None, 401, "refused")]
