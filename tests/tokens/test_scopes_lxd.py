"""The scope matrix of the contract, route by route: `read` every GET, `write` changes, `admin` the listed ones.

Every HTTP route of the app is called with a token one scope too weak (403 expected, before anything else is
looked at) and with the scope it needs (anything but 401/403). Path parameters get placeholder values.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings

ADMIN = {
    "certificates-list", "certificates-get", "certificates-add", "certificates-delete", "certificates-generate",
    "certificates-token", "server-config-patch", "server-https-listener", "server-proxies",
    "storage-pools-create", "storage-pools-delete", "networks-create", "networks-delete", "networks-ensure-ipv4",
    "remotes-add", "remotes-delete", "tokens-list", "tokens-create", "tokens-delete", "audit-list",
    "profiles-ensure-storage", "profiles-verify-network",
}
ANY_TOKEN = {"tokens-whoami", "tokens-ticket"}  # every authenticated caller
WRITE_TO_READ = {"files-get", "containers-logs"}  # reads that reveal secrets: a file's bytes, the console log
PUBLIC = {"livez", "readyz", "metrics"}
WEAKER = {Scope.write: Scope.read, Scope.admin: Scope.write}


def required(op_id: str, method: str) -> Scope | None:
    if op_id in PUBLIC or op_id in ANY_TOKEN:
        return None
    if op_id in ADMIN:
        return Scope.admin
    return Scope.read if method == "GET" and op_id not in WRITE_TO_READ else Scope.write


def routes(app: FastAPI) -> list[tuple[str, str, str, Scope]]:
    """Every documented HTTP operation under /v1 with the scope it needs."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            scope = required(op["operationId"], method.upper())
            if scope is not None:
                out.append((op["operationId"], method.upper(), re.sub(r"\{[^}]+\}", "placeholder1", path), scope))
    return out


@pytest.fixture
async def app(tmp_path: Path, lxd_daemon: DaemonInfo) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True, rate_limit="",
                                          auth_failure_rate_limit=""))
    async with LifespanManager(application):
        yield application


async def test_every_route_requires_its_scope(app: FastAPI) -> None:
    tokens = {s: app.state.tokens.create(f"t-{s}", [s])[1] for s in Scope}
    checked = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        for op_id, method, path, scope in routes(app):
            if scope in WEAKER:
                weak = await c.request(method, path, json={},
                                       headers={"Authorization": f"Bearer {tokens[WEAKER[scope]]}"})
                assert weak.status_code == 403, f"{op_id}: {method} {path} with {WEAKER[scope]} -> {weak.status_code}"
                assert f"'{scope}'" in weak.json()["detail"], weak.text
            anon = await c.request(method, path, json={})
            assert anon.status_code == 401, f"{op_id} without a token -> {anon.status_code}"
            checked.append(op_id)
    assert len(checked) >= 60
    assert {"containers-create", "images-copy", "server-proxies", "tokens-create", "audit-list"} <= set(checked)


async def test_the_needed_scope_passes_the_guard(app: FastAPI) -> None:
    tokens = {s: app.state.tokens.create(f"ok-{s}", [s])[1] for s in Scope}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        for op_id, method, path, scope in routes(app):
            if method == "DELETE" or (op_id in ADMIN and method != "GET"):
                continue  # no destructive call with placeholders on the shared daemon
            r = await c.request(method, path, headers={"Authorization": f"Bearer {tokens[scope]}"}, json={})
            assert r.status_code not in (401, 403) or r.json()["type"].endswith(("/policy", "/lxd-forbidden")), (
                f"{op_id}: {method} {path} with {scope} -> {r.status_code} {r.text[:200]}")
