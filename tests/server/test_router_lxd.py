"""/v1/server: facts and certificate on the shared daemon; config, HTTPS listener and proxies on a throwaway daemon
(never the shared one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import BACKENDS, DaemonInfo, LocalDaemon, free_port
from app.main import create_app
from app.settings import RemoteSettings, Settings

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


async def test_server_facts_and_certificate(client: httpx.AsyncClient, lxd_daemon: DaemonInfo, backend: str) -> None:
    r = await client.get("/v1/server")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backend"] == backend and body["version"] and body["clustered"] is False
    assert body["certificate_fingerprint"] == lxd_daemon.server_fingerprint
    assert "storage" in body["api_extensions"] and body["storage_supported"] is True
    assert body["host_arch"] in body["architectures"] and r.headers.get("etag")
    r = await client.get("/v1/server", params={"remote": "tls"})
    assert r.status_code == 200 and r.json()["certificate_fingerprint"] == lxd_daemon.server_fingerprint

    r = await client.get("/v1/server/certificate")
    assert r.status_code == 200
    assert r.json()["fingerprint"] == lxd_daemon.server_fingerprint
    assert r.json()["certificate"].startswith("-----BEGIN CERTIFICATE-----")


@pytest.fixture(scope="module")
def throwaway(backend: str) -> Iterator[LocalDaemon]:
    daemon = LocalDaemon(backend=BACKENDS[backend])
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
async def own(tmp_path: Path, throwaway: LocalDaemon) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(_env_file=None, remotes=[RemoteSettings(name="own", url=f"unix://{throwaway.socket_path}",
                                                                default=True)],
                        data_dir=tmp_path / "data", auth_enabled=False)  # type: ignore[call-arg]
    app = create_app(settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        yield c


@pytest.mark.lxd
async def test_patch_config_merges_under_the_etag(own: httpx.AsyncClient) -> None:
    etag = (await own.get("/v1/server")).headers["etag"]
    r = await own.patch("/v1/server/config", json={"config": {"images.auto_update_interval": "12",
                                                              "images.remote_cache_expiry": "5"}},
                        headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.json()["config"]["images.auto_update_interval"] == "12"
    r = await own.patch("/v1/server/config", json={"config": {"images.auto_update_interval": "1"}},
                        headers={"If-Match": etag})
    assert r.status_code == 412
    r = await own.patch("/v1/server/config", json={"config": {"images.auto_update_interval": None}})
    assert r.status_code == 200
    assert "images.auto_update_interval" not in r.json()["config"]
    assert r.json()["config"]["images.remote_cache_expiry"] == "5"
    r = await own.patch("/v1/server/config", json={"config": {"images.remote_cache_expiry": None}})
    assert r.json()["config"] == {}


@pytest.mark.lxd
async def test_https_listener_and_proxies(own: httpx.AsyncClient) -> None:
    address = f"127.0.0.1:{free_port()}"
    r = await own.post("/v1/server/https-listener", json={"address": address})
    assert r.status_code == 200, r.text
    assert r.json() == {"address": address}
    r = await own.post("/v1/server/https-listener", json={})
    assert r.status_code == 200 and r.json()["address"] in ("[::]", "0.0.0.0")
    assert (await own.patch("/v1/server/config", json={"config": {"core.https_address": None}})).status_code == 200

    r = await own.put("/v1/server/proxies", json={"http": "http://proxy.lgw:3128", "https": "",
                                                  "no_proxy": "localhost"})
    assert r.status_code == 200, r.text
    assert r.json() == {"http": "http://proxy.lgw:3128", "https": "", "no_proxy": "localhost"}
    config = (await own.patch("/v1/server/config", json={"config": {}})).json()["config"]
    assert config["core.proxy_http"] == "http://proxy.lgw:3128"
    r = await own.put("/v1/server/proxies", json={"http": "", "https": "", "no_proxy": ""})
    assert r.status_code == 200
    config = (await own.patch("/v1/server/config", json={"config": {}})).json()["config"]
    assert not any(k.startswith("core.proxy") for k in config)
