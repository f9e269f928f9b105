"""/v1/certificates against the real private LXD: the trust store, generated key pairs, trust tokens; admin only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import DaemonInfo
from app.lxd.certificates import TrustToken
from app.lxd.client import Client
from app.lxd.pem import Certificate
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


async def test_trust_store_generate_add_get_delete(client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> None:
    made: list[str] = []
    try:
        r = await client.get("/v1/certificates")
        assert r.status_code == 200 and "harness" in [c["name"] for c in r.json()["items"]]

        r = await client.post("/v1/certificates/generate", json={"name": "lgw-gen"})
        assert r.status_code == 201, r.text
        pair = r.json()
        assert pair["trusted"] is False and "PRIVATE KEY" in pair["key_pem"]
        assert Certificate.from_pem(pair["certificate_pem"]).fingerprint() == pair["fingerprint"]
        assert (await client.get(f"/v1/certificates/{pair['fingerprint']}")).status_code == 404

        r = await client.post("/v1/certificates/generate", json={"name": "lgw-gen2", "trust": True})
        trusted = r.json()
        made.append(trusted["fingerprint"])
        r = await client.get(f"/v1/certificates/{trusted['fingerprint'][:16]}")
        assert r.status_code == 200 and r.json()["name"] == "lgw-gen2" and r.headers.get("etag")

        r = await client.post("/v1/certificates", json={"name": "lgw-added", "certificate": pair["certificate_pem"],
                                                        "type": "client"})
        assert r.status_code == 201, r.text
        made.append(pair["fingerprint"])
        assert r.json()["fingerprint"] == pair["fingerprint"]
        again = await client.post("/v1/certificates", json={"name": "x", "certificate": pair["certificate_pem"]})
        assert again.status_code == 409
        bad = await client.post("/v1/certificates", json={"name": "x", "certificate": "not a pem"})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"

        for fp in list(made):
            assert (await client.delete(f"/v1/certificates/{fp}")).status_code == 204
            made.remove(fp)
        assert (await client.delete(f"/v1/certificates/{pair['fingerprint']}")).status_code == 404
    finally:
        async with Client.unix(lxd_daemon.socket_path) as lxd:
            for fp in made:
                await lxd.certificates.delete(fp)


async def test_trust_token(client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> None:
    r = await client.post("/v1/certificates/tokens", json={"name": "lgw-laptop"})
    assert r.status_code == 201, r.text
    body = r.json()
    token = TrustToken.decode(body["token"])
    assert token.client_name == "lgw-laptop" and token.fingerprint == lxd_daemon.server_fingerprint
    assert body["addresses"] == token.addresses and token.addresses
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        await lxd.certificates.revoke_token(body["operation_id"])


async def test_certificates_need_admin(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    app = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True))
    _, secret = app.state.tokens.create("writer", [Scope.read, Scope.write])
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        headers = {"Authorization": f"Bearer {secret}"}
        assert (await c.get("/v1/certificates", headers=headers)).status_code == 403
        assert (await c.post("/v1/certificates/generate", json={"name": "x"}, headers=headers)).status_code == 403
        assert (await c.post("/v1/networks", json={"name": "lgwx"}, headers=headers)).status_code == 403
        assert (await c.post("/v1/storage-pools", json={"name": "lgwx", "driver": "dir"},
                             headers=headers)).status_code == 403
        assert (await c.post("/v1/profiles/default/verify-network", headers=headers)).status_code == 403
        assert (await c.get("/v1/profiles", headers=headers)).status_code == 200
