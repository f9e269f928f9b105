"""Bearer tokens, scopes, revocation at once, tickets, the CLI; with the tokens file (SQLite) and with the tokens in
a PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope, Tokens, TokenStore
from tests.support.app import make_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
async def secured(request: pytest.FixtureRequest, tmp_path: Path,
                  lxd_daemon: DaemonInfo) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    database = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    application = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True, **database))
    async with LifespanManager(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://gw") as c:
        yield application, c


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_missing_or_bad_token_is_401_with_challenge(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, c = secured
    for headers in ({}, _bearer("nope"), {"Authorization": "Basic abc"}):
        r = await c.get("/v1/whoami", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
    assert (await c.get("/livez")).status_code == 200
    assert (await c.get("/readyz")).status_code == 200


async def test_scopes_and_revocation(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    store: Tokens = app.state.tokens
    _, admin = store.create("root", [Scope.admin])
    _, reader = store.create("reader", [Scope.read], remotes=["local"])
    me = (await c.get("/v1/whoami", headers=_bearer(reader))).json()
    assert me == {"name": "reader", "scopes": ["read"], "remotes": ["local"], "projects": None,
                  "authenticated": True}
    r = await c.post("/v1/tokens", json={"name": "x", "scopes": ["read"]}, headers=_bearer(reader))
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    r = await c.post("/v1/tokens", json={"name": "ci", "scopes": ["write"]}, headers=_bearer(admin))
    assert r.status_code == 201
    created = r.json()
    assert created["token"].startswith("lxdgw_")
    listed = (await c.get("/v1/tokens", headers=_bearer(admin))).json()["items"]
    assert [t["name"] for t in listed] == ["ci", "reader", "root"]
    assert created["token"] not in str(listed) and "secret_sha256" not in str(listed)
    if isinstance(store, TokenStore):
        assert created["token"] not in Path(store.path).read_text()
    assert (await c.get("/v1/whoami", headers=_bearer(created["token"]))).status_code == 200
    assert (await c.post("/v1/tokens", json={"name": "ci", "scopes": ["read"]},
                         headers=_bearer(admin))).status_code == 409
    assert (await c.delete("/v1/tokens/ci", headers=_bearer(admin))).status_code == 204
    assert (await c.get("/v1/whoami", headers=_bearer(created["token"]))).status_code == 401
    assert (await c.delete("/v1/tokens/ci", headers=_bearer(admin))).status_code == 404


async def test_expired_token_stops_working(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    import datetime as dt

    app, c = secured
    _, secret = app.state.tokens.create("old", [Scope.read],
                                        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert (await c.get("/v1/whoami", headers=_bearer(secret))).status_code == 401


async def test_ticket_is_single_use(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    _, secret = app.state.tokens.create("web", [Scope.read])
    t = (await c.post("/v1/tickets", headers=_bearer(secret))).json()
    assert t["expires_in"] == 30
    r = await c.get("/v1/jobs/nosuchjob/events", params={"ticket": t["ticket"]})
    assert r.status_code == 404, r.text  # let in (then: no such job)
    r = await c.get("/v1/jobs/nosuchjob/events", params={"ticket": t["ticket"]})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


async def test_ticket_on_a_route_that_does_not_stream_is_401(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    _, secret = app.state.tokens.create("web", [Scope.write])
    ticket = (await c.post("/v1/tickets", headers=_bearer(secret))).json()["ticket"]
    r = await c.get("/v1/whoami", params={"ticket": ticket})
    assert r.status_code == 401 and "websocket and event-stream routes only" in r.json()["detail"], r.text
    r = await c.post("/v1/containers/nosuch/exec", params={"ticket": ticket}, json={"command": ["id"]})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", r.text
    r = await c.get("/v1/containers", params={"ticket": ticket})
    assert r.status_code == 401
    assert (await c.get("/v1/jobs", headers=_bearer(secret))).json()["items"] == []  # no exec job was started
    r = await c.get("/v1/jobs/nosuchjob/events", params={"ticket": ticket})  # refusals did not use it up
    assert r.status_code == 404, r.text
    # a collection's watch stream is an event stream: a ticket opens it (then: no such project), once
    ticket = (await c.post("/v1/tickets", headers=_bearer(secret))).json()["ticket"]
    watch = {"ticket": ticket, "watch": "true", "project": "no-such-project"}
    assert (await c.get("/v1/containers", params=watch)).status_code == 404
    assert (await c.get("/v1/containers", params=watch)).status_code == 401


async def test_ticket_dies_with_its_token(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    _, secret = app.state.tokens.create("web", [Scope.read])
    ticket = (await c.post("/v1/tickets", headers=_bearer(secret))).json()["ticket"]
    app.state.tokens.revoke("web")
    app.state.tokens.create("web", [Scope.read])  # the same name again: another token
    r = await c.get("/v1/jobs/nosuchjob/events", params={"ticket": ticket})
    assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text


def test_cli_revocation_takes_effect_without_restart(tmp_path: Path) -> None:
    env = {**os.environ, "LXDGW_DATA_DIR": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "app", "tokens", *a], cwd=ROOT, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    created = run("create", "deploy", "--scope", "write", "--project", "default")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    store = TokenStore(tmp_path / "tokens.json")
    assert store.authenticate(secret) is not None
    assert secret not in run("list").stdout
    assert run("revoke", "deploy").returncode == 0
    assert store.authenticate(secret) is None
    assert run("revoke", "deploy").returncode == 1


async def test_cli_revocation_on_postgresql_takes_effect_in_a_running_gateway(tmp_path: Path,
                                                                              postgres_url: str) -> None:
    import asyncio
    import time

    from app.store.pg_state import shared_state
    from app.store.postgres import PostgresJobStore

    env = {**os.environ, "LXDGW_DATA_DIR": str(tmp_path), "LXDGW_DATABASE_URL": postgres_url}
    run = lambda *a: subprocess.run([sys.executable, "-m", "app", "tokens", *a], cwd=ROOT, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    jobs = PostgresJobStore(postgres_url)
    await jobs.open()
    gateway = shared_state(postgres_url, tokens_file=tmp_path / "tokens.json", secret=None)  # what a gateway keeps
    await gateway.start(jobs)
    try:
        created = await asyncio.to_thread(run, "create", "deploy", "--scope", "write", "--project", "default")
        assert created.returncode == 0, created.stderr
        secret = created.stdout.strip()
        deadline = time.monotonic() + 1
        while gateway.tokens.authenticate(secret) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert secret not in (await asyncio.to_thread(run, "list")).stdout
        assert not (tmp_path / "tokens.json").exists()  # the database holds it, not a file
        assert (await asyncio.to_thread(run, "revoke", "deploy")).returncode == 0
        deadline = time.monotonic() + 1
        while gateway.tokens.authenticate(secret) is not None:
            assert time.monotonic() < deadline, "the revocation did not reach the gateway within a second"
            await asyncio.sleep(0.01)
        assert (await asyncio.to_thread(run, "revoke", "deploy")).returncode == 1
    finally:
        await gateway.stop()
        await jobs.close()


async def test_token_allow_takes_the_policy_rule_names_and_refuses_a_typo(
        secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = secured
    _, admin = app.state.tokens.create("root", [Scope.admin])
    good = ["security.privileged", "raw", "device.proxy", "nic.physical", "security.syscalls.intercept.*",
            "linux.sysctl.net.ipv4.ip_forward", "profile:gpu-curated", "profile:p2/gpu-curated"]
    r = await c.post("/v1/tokens", headers=_bearer(admin), json={"name": "ops", "scopes": ["write"], "allow": good})
    assert r.status_code == 201 and r.json()["allow"] == good, r.text
    for typo in ("security.privilegd", "device.prxy", "nic.bridged", "volatile.*", "profile:"):
        r = await c.post("/v1/tokens", headers=_bearer(admin),
                         json={"name": "typo", "scopes": ["write"], "allow": ["raw", typo]})
        assert r.status_code == 422 and typo in r.text, r.text
    assert "typo" not in [t.name for t in app.state.tokens.list()]


def test_cli_allow_takes_the_policy_rule_names_and_refuses_a_typo(tmp_path: Path) -> None:
    env = {**os.environ, "LXDGW_DATA_DIR": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "app", "tokens", *a], cwd=ROOT, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    ok = run("create", "gpu", "--scope", "write", "--allow", "device.gpu", "--allow", "profile:gpu-curated",
             "--allow", "security.syscalls.intercept.mknod")
    assert ok.returncode == 0, ok.stderr
    assert TokenStore(tmp_path / "tokens.json").list()[0].allow == ["device.gpu", "profile:gpu-curated",
                                                                    "security.syscalls.intercept.mknod"]
    typo = run("create", "typo", "--scope", "write", "--allow", "device.gpuu")
    assert typo.returncode != 0 and "unknown policy rule 'device.gpuu'" in typo.stderr, typo.stderr
