"""/v1/remotes: list with reachability; add the second daemon by URL and a real trust token (usable at once, kept
in the data directory, loaded again by a new gateway); a token checked against the wrong server; remove."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.main import create_app
from tests.support.app import make_settings

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


def _asgi(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def _trusted(image_server: DaemonInfo) -> set[str]:
    async with Client.unix(image_server.socket_path) as lxd:
        return {c.fingerprint for c in await lxd.certificates.list()}


async def test_list_remotes(client: httpx.AsyncClient, backend: str) -> None:
    r = await client.get("/v1/remotes")
    assert r.status_code == 200, r.text
    items = {i["name"]: i for i in r.json()["items"]}
    assert items["local"]["default"] is True and items["local"]["protocol"] == "unix"
    assert items["local"]["reachable"] is True and items["local"]["version"]
    assert items["local"]["backend"] == backend and items["local"]["error"] is None
    assert items["local"]["clustered"] is False and items["local"]["members"] is None  # a standalone daemon
    assert items["tls"]["protocol"] == "https" and items["tls"]["reachable"] is True
    assert r.json()["next_cursor"] is None


async def test_add_remote_by_trust_token_persist_and_remove(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                            image_server: DaemonInfo) -> None:
    before = await _trusted(image_server)
    async with Client.unix(image_server.socket_path) as lxd:
        token = (await lxd.certificates.create_token("lgw-gateway")).encode()
        wrong = (await lxd.certificates.create_token("lgw-wrong"))
    settings = make_settings(tmp_path, lxd_daemon)
    app = create_app(settings)
    try:
        async with LifespanManager(app), _asgi(app) as c:
            # the token names the second daemon's certificate: the main daemon presents another one
            r = await c.post("/v1/remotes", json={"name": "lgw-wrong", "url": lxd_daemon.https_url,
                                                  "token": wrong.encode()})
            assert r.status_code == 403 and r.json()["type"].endswith("/fingerprint-mismatch"), r.text
            assert not (settings.data_dir / "remotes" / "lgw-wrong").exists()
            assert (await c.post("/v1/remotes", json={"name": "x", "token": "bm90IGEgdG9rZW4="})).status_code == 422
            r = await c.post("/v1/remotes", json={"name": "local", "token": token})
            assert r.status_code == 409

            r = await c.post("/v1/remotes", json={"name": "lxd2", "url": image_server.https_url, "token": token})
            assert r.status_code == 201, r.text
            assert r.json()["reachable"] is True and r.json()["url"] == image_server.https_url
            assert r.json()["added_at_run_time"] is True
            r = await c.get("/v1/images", params={"remote": "lxd2"})
            assert r.status_code == 200 and image_server.image_fingerprint in [
                i["fingerprint"] for i in r.json()["items"]]
            assert (settings.data_dir / "remotes.json").exists()
            assert (await c.delete("/v1/remotes/local")).status_code == 409
        assert len(await _trusted(image_server)) == len(before) + 1

        app2 = create_app(settings)  # a new gateway on the same data directory
        async with LifespanManager(app2), _asgi(app2) as c:
            r = await c.get("/v1/server", params={"remote": "lxd2"})
            assert r.status_code == 200 and r.json()["certificate_fingerprint"] == image_server.server_fingerprint
            assert (await c.delete("/v1/remotes/lxd2")).status_code == 204
            assert (await c.get("/v1/server", params={"remote": "lxd2"})).status_code == 404
            assert (await c.delete("/v1/remotes/lxd2")).status_code == 404
        assert await _trusted(image_server) == before
        assert not (settings.data_dir / "remotes" / "lxd2").exists()
    finally:
        async with Client.unix(image_server.socket_path) as lxd:
            for tok in await lxd.certificates.tokens():
                if tok.client_name.startswith("lgw-"):
                    await lxd.certificates.revoke_token(tok)
            for cert in await lxd.certificates.list():
                if cert.fingerprint not in before:
                    await lxd.certificates.delete(cert.fingerprint)


