"""What a `read` token may see, against the real private LXD: no file of a container (every file, `/etc/shadow`
included, needs `write`), no console log (it shows what boot and cloud-init print), and container and profile
config with the values of secret-bearing keys redacted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.locallxd.daemon import DaemonInfo
from app.store.tokens import Scope
from tests.containers.support import unique
from tests.support.secured_gateway import Gateway, secured_gateway

PREFIX = unique("trs")
SECRETS = {"environment.DB_PASSWORD": "pw-4711", "user.user-data": "#cloud-config\npassword: hunter2\n",
           "user.vendor-data": "#cloud-config\n{}", "user.network-config": "version: 2", "user.api-secret": "s3",
           "user.db-password": "pw-2"}
PLAIN = {"user.role": "web", "limits.cpu": "1"}


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory, lxd_daemon: DaemonInfo) -> AsyncIterator[Gateway]:
    async with secured_gateway(tmp_path_factory.mktemp("reads"), lxd_daemon, f"{PREFIX}-run") as gateway:
        yield gateway


async def test_read_token_cannot_read_etc_shadow_nor_any_file(gw: Gateway) -> None:
    reader, writer = gw.token(unique("reader"), Scope.read), gw.token(unique("writer"))
    url = f"/v1/containers/{gw.container}/files"
    async with gw.http(writer) as w:
        r = await w.put(url, params={"path": "/root/key"}, content=b"private", headers={"X-File-Mode": "0600"})
        assert r.status_code == 200, r.text
        assert (await w.get(url, params={"path": "/root/key"})).content == b"private"
        assert (await w.get(url, params={"path": "/etc"})).status_code == 200
    async with gw.http(reader) as c:
        for path in ("/etc/shadow", "/root/key", "/etc"):
            r = await c.get(url, params={"path": path})
            assert r.status_code == 403 and "'write'" in r.json()["detail"], (path, r.text)


async def test_read_token_cannot_read_the_console_log(gw: Gateway) -> None:
    reader, writer = gw.token(unique("reader"), Scope.read), gw.token(unique("writer"))
    url = f"/v1/containers/{gw.container}/logs"
    async with gw.http(reader) as c:
        r = await c.get(url)
        assert r.status_code == 403 and "'write'" in r.json()["detail"], r.text
    async with gw.http(writer) as w:
        assert (await w.get(url)).status_code == 200


async def test_read_token_sees_secret_config_values_redacted(gw: Gateway) -> None:
    reader, writer = gw.token(unique("reader"), Scope.read), gw.token(unique("writer"))
    async with gw.http(writer) as w:
        r = await w.patch(f"/v1/containers/{gw.container}", json={"config": {**SECRETS, **PLAIN}})
        assert r.status_code == 200, r.text
        full = (await w.get(f"/v1/containers/{gw.container}")).json()
        assert {**SECRETS, **PLAIN}.items() <= full["config"].items()
        profile = unique("trs-prof")
        r = await w.post("/v1/profiles", json={"name": profile, "config": {**SECRETS, **PLAIN}})
        assert r.status_code == 201, r.text
    try:
        async with gw.http(reader) as c:
            one = (await c.get(f"/v1/containers/{gw.container}")).json()
            listed = next(i for i in (await c.get("/v1/containers", params={"prefix": PREFIX})).json()["items"]
                          if i["name"] == gw.container)
            prof = (await c.get(f"/v1/profiles/{profile}")).json()
            profs = next(p for p in (await c.get("/v1/profiles")).json()["items"] if p["name"] == profile)
        for seen in (one, listed, prof, profs):
            for key in SECRETS:
                assert seen["config"][key] == "[redacted]", (key, seen["config"])
            assert PLAIN.items() <= seen["config"].items()
            text = str(seen)
            assert not any(value in text for value in SECRETS.values()), text
        for seen in (one, listed):
            assert seen["metadata"]["user-data"] == "[redacted]" and seen["metadata"]["role"] == "web"
    finally:
        async with gw.http(writer) as w:
            await w.delete(f"/v1/profiles/{profile}")


async def test_read_token_cannot_export_a_private_image(gw: Gateway) -> None:
    reader, writer = gw.token(unique("reader"), Scope.read), gw.token(unique("writer"))
    async with gw.http(writer) as w:
        images = (await w.get("/v1/images")).json()["items"]
        private = next(i["fingerprint"] for i in images if not i["public"])
        async with w.stream("GET", f"/v1/images/{private}/export") as r:
            assert r.status_code == 200
    async with gw.http(reader) as c:
        assert (await c.get(f"/v1/images/{private}")).status_code == 200  # its description stays readable
        r = await c.get(f"/v1/images/{private}/export")
        assert r.status_code == 403 and "'write'" in r.json()["detail"], r.text


async def test_read_token_sees_secret_network_config_values_redacted(gw: Gateway) -> None:
    reader = gw.token(unique("reader"), Scope.read)
    name = f"trs{PREFIX[-6:]}"
    async with gw.http(gw.admin) as a:
        r = await a.post("/v1/networks", json={"name": name, "config": {
            "ipv4.address": "none", "ipv6.address": "none", "user.peer-password": "pw-9", "user.role": "apps"}})
        assert r.status_code == 201, r.text
    try:
        async with gw.http(reader) as c:
            net = next(n for n in (await c.get("/v1/networks")).json()["items"] if n["name"] == name)
        assert net["config"]["user.peer-password"] == "[redacted]" and net["config"]["user.role"] == "apps"
        async with gw.http(gw.admin) as a:
            net = next(n for n in (await a.get("/v1/networks")).json()["items"] if n["name"] == name)
        assert net["config"]["user.peer-password"] == "pw-9"
    finally:
        async with gw.http(gw.admin) as a:
            await a.delete(f"/v1/networks/{name}")
