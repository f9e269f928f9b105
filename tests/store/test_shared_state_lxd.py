"""Two gateways (two apps in this process, each with its own data directory) on one PostgreSQL database, in front of
the real private LXD: a token revoked through one is refused by the other; a remote added through one is served by
the other (its private key decrypted there with the shared secret key) and removed from both; without the secret
key, adding a remote at run time is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings

SECRET_KEY = "a-secret-key-of-at-least-32-characters!"
BOUND = 2.0
"""What the assertions allow for a change to reach the other gateway (notifications: milliseconds; the fallback
check: one second)."""


@asynccontextmanager
async def gateways(tmp_path: Path, daemon: DaemonInfo, url: str, *names: str,
                   **overrides: object) -> AsyncIterator[list[tuple[FastAPI, httpx.AsyncClient]]]:
    async with AsyncExitStack() as stack:
        out = []
        for name in names:
            app = create_app(make_settings(tmp_path / name, daemon, auth_enabled=True, database_url=url,
                                           rate_limit="", **overrides))
            await stack.enter_async_context(LifespanManager(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw"))
            out.append((app, client))
        yield out


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _within(bound: float, check: object) -> float:
    start = time.monotonic()
    while not await check():  # type: ignore[operator]
        assert time.monotonic() - start < bound, "the other gateway did not see the change in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_a_token_revoked_through_one_gateway_is_refused_by_the_other(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                                          postgres_url: str) -> None:
    async with gateways(tmp_path, lxd_daemon, postgres_url, "a", "b") as [(app_a, a), (_, b)]:
        _, root = app_a.state.tokens.create("root", [Scope.admin])
        r = await a.post("/v1/tokens", json={"name": "ci", "scopes": ["read"]}, headers=_bearer(root))
        assert r.status_code == 201, r.text
        ci = r.json()["token"]
        seen = await _within(BOUND, lambda: _status(b, ci, 200))
        listed = (await b.get("/v1/tokens", headers=_bearer(root))).json()["items"]
        assert {t["name"] for t in listed} == {"ci", "root"}
        assert (await b.post("/v1/tokens", json={"name": "ci", "scopes": ["read"]},
                             headers=_bearer(root))).status_code == 409
        assert (await a.delete("/v1/tokens/ci", headers=_bearer(root))).status_code == 204
        gone = await _within(BOUND, lambda: _status(b, ci, 401))
        print(f"created on a, accepted by b after {seen * 1000:.1f} ms; revoked on a, refused by b after "
              f"{gone * 1000:.1f} ms")
        assert (await b.delete("/v1/tokens/ci", headers=_bearer(root))).status_code == 404
        ticket = (await a.post("/v1/tickets", headers=_bearer(root))).json()["ticket"]
        assert (await b.get("/v1/jobs/no-such-job/events", params={"ticket": ticket})).status_code == 404
        assert (await a.get("/v1/jobs/no-such-job/events", params={"ticket": ticket})).status_code == 401  # used


async def _status(c: httpx.AsyncClient, secret: str, want: int) -> bool:
    return (await c.get("/v1/whoami", headers=_bearer(secret))).status_code == want


async def test_a_remote_added_through_one_gateway_is_served_by_the_other(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                                        image_server: DaemonInfo,
                                                                        postgres_url: str) -> None:
    async with Client.unix(image_server.socket_path) as lxd:
        before = {c.fingerprint for c in await lxd.certificates.list()}
        token = (await lxd.certificates.create_token("lgw-shared")).encode()
    try:
        async with gateways(tmp_path, lxd_daemon, postgres_url, "a", "b", secret_key=SECRET_KEY) as [
                (app_a, a), (app_b, b)], gateways(tmp_path, lxd_daemon, postgres_url, "nokey") as [(_, n)]:
            _, root = app_a.state.tokens.create("root", [Scope.admin])
            r = await a.post("/v1/remotes", json={"name": "lxd2", "url": image_server.https_url, "token": token},
                             headers=_bearer(root))
            assert r.status_code == 201, r.text

            async def served_by_b() -> bool:
                r = await b.get("/v1/server", params={"remote": "lxd2"}, headers=_bearer(root))
                return r.status_code == 200 and r.json()["certificate_fingerprint"] == image_server.server_fingerprint

            seen = await _within(BOUND, served_by_b)
            print(f"added on a, served by b after {seen * 1000:.1f} ms")
            items = {i["name"]: i for i in (await b.get("/v1/remotes", headers=_bearer(root))).json()["items"]}
            assert items["lxd2"]["added_at_run_time"] is True and items["lxd2"]["reachable"] is True
            assert not list((tmp_path / "b" / "data").glob("remotes*"))  # nothing of it on b's disk ...
            key_file = Path(app_b.state.remotes.spec("lxd2").client_key)
            assert key_file.stat().st_mode & 0o777 == 0o600  # ... but its private directory
            assert (await n.get("/v1/server", params={"remote": "lxd2"},
                                headers=_bearer(root))).status_code == 404
            refused = await n.post("/v1/remotes", json={"name": "lxd3", "url": image_server.https_url,
                                                        "token": token}, headers=_bearer(root))
            assert refused.status_code == 503 and refused.json()["type"].endswith("/secret-key-missing"), refused.text

            assert (await b.delete("/v1/remotes/lxd2", headers=_bearer(root))).status_code == 204

            async def gone_from_a() -> bool:
                r = await a.get("/v1/server", params={"remote": "lxd2"}, headers=_bearer(root))
                return r.status_code == 404

            await _within(BOUND, gone_from_a)
            await _within(BOUND, lambda: asyncio.sleep(0, not key_file.exists()))
        async with Client.unix(image_server.socket_path) as lxd:
            assert {c.fingerprint for c in await lxd.certificates.list()} == before
    finally:
        async with Client.unix(image_server.socket_path) as lxd:
            for tok in await lxd.certificates.tokens():
                if tok.client_name.startswith("lgw-"):
                    await lxd.certificates.revoke_token(tok)
