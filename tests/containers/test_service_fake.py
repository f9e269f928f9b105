"""The LXD-backed core services against a scripted fake LXD, for what the real private LXD cannot be made to do:
clusters and `target`, the IPv4 listener fallback, failing deletes and operations, the legacy bridge file,
servers without pools, simplestreams indexes; and the exact requests sent (bodies, If-Match, order)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from app.containers.jobs import remove_many
from app.containers.service import (
    ContainerCreateError,
    ContainerRemoveError,
    ContainerStartError,
    create_from_spec,
    remove_container,
)
from app.containers.spec import ContainerSpec
from app.images.search import ImageError, ImageSource
from app.images.service import SimpleStreamsRemote, connect_image_remote, copy_remote_image, find_image
from app.jobs.env import SERVICE_KEY, WorkflowEnv
from app.jobs.runner import JobFailure
from app.lxd import Client, LXDError
from app.lxd.registry import RemoteRegistry
from app.lxd.servers import IPV6_UNSUPPORTED_MESSAGE, ServerSpec
from app.networks.decisions import NoNicError
from app.networks.service import NetworkVerifyError, ensure_ipv4, verify_network_device
from app.server.service import enable_https_listener, update_server_config
from app.settings import Settings
from app.storage.service import create_pool, create_volume, ensure_default_storage
from tests.fakes.lxd import Call, FakeLXD, error, fake_lxd, operation, sync


@pytest.fixture
async def lxd(tmp_path: Path) -> AsyncIterator[tuple[FakeLXD, Client]]:
    async for pair in fake_lxd(tmp_path):
        yield pair


def instance(name: str, status: str = "Stopped", code: int = 102, **kw: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "status_code": code, "architecture": "x86_64", "config": {},
            "devices": {}, "ephemeral": False, "profiles": ["default"], "stateful": False, "description": "", **kw}


# ---------------------------------------------------------------------------------------------- server


async def test_s7_with_target_good_member_and_error_passed_through(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.server_info["environment"]["server_clustered"] = True
    targeted = client.with_target("node1")
    facts = await targeted.server_info()
    assert fake.requests("GET", "/1.0")[-1].params["target"] == "node1" and facts.clustered
    fake.on("GET", "/1.0/profiles", sync(["/1.0/profiles/default"]))
    assert "default" in await targeted.profiles.names()
    assert fake.requests("GET", "/1.0/profiles")[-1].params == {"project": "default", "target": "node1"}
    fake.on("GET", "/1.0", lambda c: error("not a cluster member", 400) if c.params.get("target") else
            sync(fake.server_info))
    with pytest.raises(LXDError) as err:
        await client.with_target("bad-node").server_info()
    assert err.value.error == "not a cluster member"


async def test_s8_with_project_adds_the_project(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/profiles", sync(["/1.0/profiles/default"]))
    assert "default" in await client.with_project("my-project").profiles.names()
    assert fake.requests("GET", "/1.0/profiles")[-1].params["project"] == "my-project"


async def test_s9_update_server_config_get_then_put_with_the_etag(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.server_info["config"] = {"keep": "me"}
    fake.on("PUT", "/1.0", sync({}))
    await update_server_config(client, {"key1": "val1"})
    put = fake.requests("PUT", "/1.0")[0]
    assert put.body == {"config": {"keep": "me", "key1": "val1"}} and put.headers["if-match"] == '"server-etag"'


def _put_fails_for(addresses: dict[str, httpx.Response]) -> Any:
    def handler(c: Call) -> httpx.Response:
        return addresses.get(c.body["config"]["core.https_address"], sync({}))
    return handler


async def test_s14_https_listener_success_and_ipv4_fallback(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("PUT", "/1.0", sync({}))
    assert await enable_https_listener(client) == "[::]"
    assert fake.sent()[:2] == [("GET", "/1.0"), ("PUT", "/1.0")]
    fake.calls.clear()
    refused = error(f"cannot listen on https socket: {IPV6_UNSUPPORTED_MESSAGE}")
    fake.on("PUT", "/1.0", _put_fails_for({"[::]": refused}))
    assert await enable_https_listener(client) == "0.0.0.0"
    puts = [c.body["config"]["core.https_address"] for c in fake.requests("PUT", "/1.0")]
    assert puts == ["[::]", "0.0.0.0"] and len(fake.requests("GET", "/1.0")) >= 2


async def test_s14_https_listener_errors(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0", error("bad"))
    with pytest.raises(LXDError, match=r"bad"):
        await enable_https_listener(client)
    assert fake.requests("PUT", "/1.0") == []
    fake.on("GET", "/1.0", sync(fake.server_info))
    fake.on("PUT", "/1.0", _put_fails_for({"[::]": error(IPV6_UNSUPPORTED_MESSAGE), "0.0.0.0": error("bad")}))
    with pytest.raises(LXDError, match=r"bad"):
        await enable_https_listener(client)
    fake.on("GET", "/1.0", sync(fake.server_info), error("bad"))
    fake.on("PUT", "/1.0", error(IPV6_UNSUPPORTED_MESSAGE))
    with pytest.raises(LXDError, match=r"bad"):
        await enable_https_listener(client)


# ---------------------------------------------------------------------------------------------- profiles


async def test_s11_s12_profiles(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/profiles", sync(["/1.0/profiles/default", "/1.0/profiles/custom"]))
    names = await client.profiles.names()
    assert "default" in names and "unknown" not in names
    fake.on("POST", "/1.0/profiles", sync({}))
    fake.on("GET", "/1.0/profiles/custom", sync({"name": "custom", "config": {"boot.autostart": "false"}}))
    created = await client.profiles.create("custom", config={"boot.autostart": "false"})
    assert created.config == {"boot.autostart": "false"}
    assert fake.requests("POST", "/1.0/profiles")[0].body == {"name": "custom",
                                                              "config": {"boot.autostart": "false"}}


# ---------------------------------------------------------------------------------------------- containers


async def test_s10_update_container_config_puts_with_the_etag(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/instances/c1", sync(instance("c1"), etag="c1-etag"))
    fake.on("PUT", "/1.0/instances/c1", operation())
    # what PATCH /v1/containers/{name} does: read with the ETag, write the merged definition back under it
    inst = await client.instances.get("c1")
    await client.instances.update("c1", {**inst.writable(), "config": {**inst.config, "key1": "val1"}},
                                  etag=inst.etag)
    put = fake.requests("PUT", "/1.0/instances/c1")[0]
    assert put.body["config"] == {"key1": "val1"} and put.headers["if-match"] == '"c1-etag"'


async def test_s13_replace_profile(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/instances/c1", sync(instance("c1", profiles=["default", "juju-default", "old"]),
                                             etag="e"))
    fake.on("PUT", "/1.0/instances/c1", operation())
    inst = await client.instances.get("c1")
    profiles = [("new" if p == "old" else p) for p in inst.profiles]
    await client.instances.update("c1", {**inst.writable(), "profiles": profiles}, etag=inst.etag)
    put = fake.requests("PUT", "/1.0/instances/c1")[0]
    assert put.body["profiles"] == ["default", "juju-default", "new"] and put.headers["if-match"] == '"e"'


def _job_context(client: Client, **params: Any) -> Any:
    """A job step's context whose LXD client is `client` (the container.* steps reach LXD through it)."""
    env = WorkflowEnv(remotes=cast(RemoteRegistry, None), settings=cast(Settings, None))
    env.client = lambda remote, project: client  # type: ignore[method-assign]

    async def progress(*_: Any) -> None:
        return None

    return SimpleNamespace(services={SERVICE_KEY: env}, params=params, progress=progress, remote=None, project=None)


def _spec(name: str = "c1", **kw: Any) -> ContainerSpec:
    return ContainerSpec.model_validate({"name": name, "image": {"fingerprint": "abc"}, **kw})


async def test_s28_create_start_get_in_order(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("POST", "/1.0/instances", operation())
    fake.on("PUT", "/1.0/instances/c1/state", operation())
    fake.on("GET", "/1.0/instances/c1", sync(instance("c1", "Running", 103)))
    made = await create_from_spec(client, _spec(), image=ImageSource("abc"))
    assert made.container.name == "c1"
    assert [k for k in fake.sent() if k[1] != "/1.0"] == [
        ("POST", "/1.0/instances"), ("PUT", "/1.0/instances/c1/state"), ("GET", "/1.0/instances/c1")]
    post = fake.requests("POST", "/1.0/instances")[0].body
    assert post["source"] == {"type": "image", "fingerprint": "abc"} and post["ephemeral"] is False
    assert fake.requests("PUT", "/1.0/instances/c1/state")[0].body == {
        "action": "start", "timeout": -1, "force": False, "stateful": False}
    assert "if-match" not in fake.requests("PUT", "/1.0/instances/c1/state")[0].headers


async def test_s29_start_failure_removes_and_returns_the_start_error(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("POST", "/1.0/instances", operation())
    fake.on("PUT", "/1.0/instances/c1/state", operation(400, "start failed"))
    fake.on("GET", "/1.0/instances/c1/state", sync({"status": "Stopped", "status_code": 102}))
    fake.on("DELETE", "/1.0/instances/c1", operation())
    with pytest.raises(ContainerStartError, match=r"^start failed$"):
        await create_from_spec(client, _spec(), image=ImageSource("abc"))
    assert [k for k in fake.sent() if k[1] != "/1.0"] == [
        ("POST", "/1.0/instances"), ("PUT", "/1.0/instances/c1/state"), ("GET", "/1.0/instances/c1/state"),
        ("DELETE", "/1.0/instances/c1")]


async def test_s30_create_operation_failure(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("POST", "/1.0/instances", operation(400, "create failed"))
    with pytest.raises(ContainerCreateError, match=r"create failed"):
        await create_from_spec(client, _spec(), image=ImageSource("abc"))


async def test_s52_bridge_ipv4_ensured_before_the_create(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/networks/lxdbr0", sync({"name": "lxdbr0", "type": "bridge", "managed": True,
                                                 "config": {}}, etag="n-etag"))
    fake.on("PUT", "/1.0/networks/lxdbr0", sync({}))
    fake.on("POST", "/1.0/instances", operation())
    fake.on("GET", "/1.0/instances/c1", sync(instance("c1")))
    spec = _spec(start=False, interfaces=[{"name": "eth0", "parent": "lxdbr0"}])
    made = await create_from_spec(client, spec, image=ImageSource("abc"))
    assert made.ensured_ipv4 and made.unknown_parents == ["lxdbr0"]
    keys = [k for k in fake.sent() if k[1] != "/1.0"]
    assert keys.index(("PUT", "/1.0/networks/lxdbr0")) < keys.index(("POST", "/1.0/instances"))
    put = fake.requests("PUT", "/1.0/networks/lxdbr0")[0]
    assert put.body["config"] == {"ipv4.address": "auto", "ipv4.nat": "true"} and put.headers["if-match"] == '"n-etag"'


async def test_s53_image_acquisition_failure(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    spec = ContainerSpec.model_validate({"name": "c1", "image": {"series": "xenial", "arch": "amd64"}})
    with pytest.raises(ImageError, match=r'^acquiring LXD image: bad protocol supplied for connection: FOOBAR$'):
        await create_from_spec(client, spec, sources=[ServerSpec(host="https://x", protocol="FOOBAR")])
    assert fake.requests("POST", "/1.0/instances") == []


async def test_s31_forced_stop_with_the_etag_then_delete(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/instances/c1/state", sync({"status_code": 102}))
    fake.on("GET", "/1.0/instances/c2/state", sync({"status_code": 101}, etag="c2-etag"))
    fake.on("PUT", "/1.0/instances/c2/state", operation())
    for n in ("c1", "c2"):
        fake.on("DELETE", f"/1.0/instances/{n}", operation())
    await remove_many(_job_context(client, names=["c1", "c2"]))
    stop = fake.requests("PUT", "/1.0/instances/c2/state")[0]
    assert stop.body == {"action": "stop", "timeout": -1, "force": True, "stateful": False}
    assert stop.headers["if-match"] == '"c2-etag"' and fake.requests("PUT", "/1.0/instances/c1/state") == []
    assert len(fake.requests("DELETE")) == 2


async def test_s32_delete_not_found_is_success(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/instances/c1/state", sync({"status_code": 102}))
    fake.on("DELETE", "/1.0/instances/c1", error("not found", 404))
    await remove_container(client, "c1")


async def test_s33_refused_deletes_are_not_retried_and_are_aggregated(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    for n in ("c1", "c2", "c3"):
        fake.on("GET", f"/1.0/instances/{n}/state", sync({"status_code": 102}))
    fake.on("DELETE", "/1.0/instances/c1", error("deletion failed"))
    fake.on("DELETE", "/1.0/instances/c2", error("deletion failed"))
    fake.on("DELETE", "/1.0/instances/c3", operation())
    with pytest.raises(JobFailure, match=r"^failed to remove containers: c1, c2$") as err:
        await remove_many(_job_context(client, names=["c1", "c2", "c3"]))
    assert err.value.extra["failed"] == ["c1", "c2"] and err.value.result["removed"] == ["c3"]
    assert [len(fake.requests("DELETE", f"/1.0/instances/{n}")) for n in ("c1", "c2", "c3")] == [1, 1, 1]


async def test_s34_failed_delete_operations_are_retried_three_times(lxd: tuple[FakeLXD, Client],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake, client = lxd
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    monkeypatch.setitem(remove_container.__kwdefaults__, "sleep", sleep)

    for n in ("c1", "c2"):
        fake.on("GET", f"/1.0/instances/{n}/state", sync({"status_code": 102}))
    fake.on("DELETE", "/1.0/instances/c1", operation(400, "busy"), operation())
    fake.on("DELETE", "/1.0/instances/c2", operation(400, "busy"))
    with pytest.raises(JobFailure, match=r"^failed to remove containers: c2$"):
        await remove_many(_job_context(client, names=["c1", "c2"]))
    assert len(fake.requests("DELETE", "/1.0/instances/c1")) == 2
    assert len(fake.requests("DELETE", "/1.0/instances/c2")) == 3
    assert slept == [2.0, 2.0, 2.0]
    with pytest.raises(ContainerRemoveError, match=r"^attempt count exceeded: busy$"):
        await remove_container(client, "c2", sleep=sleep)


# ---------------------------------------------------------------------------------------------- network


async def test_s36_ensure_ipv4_present_address_untouched(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/networks/n", sync({"name": "n", "config": {"ipv4.address": "10.5.3.1"}}))
    assert await ensure_ipv4(client, "n") is False
    assert fake.requests("PUT") == []


async def test_s44_no_nic_on_a_cluster_is_refused(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.server_info["environment"]["server_clustered"] = True
    fake.on("GET", "/1.0/profiles/default", sync({"name": "default", "devices": {}}))
    with pytest.raises(NoNicError, match=r'^profile "default" does not have any devices configured with type "nic"$'):
        await verify_network_device(client)


async def test_s42_missing_bridge_created_with_ipv4_auto_and_no_ipv6(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/profiles/default", sync({"name": "default", "devices": {}, "config": {}},
                                                 etag="p-etag"))
    bridge = {"name": "lxdbr0", "type": "bridge", "managed": True, "config": {"ipv6.address": "none"}}
    fake.on("GET", "/1.0/networks/lxdbr0", error("not found", 404), error("not found", 404), sync(bridge))
    fake.on("POST", "/1.0/networks", sync({}))
    fake.on("PUT", "/1.0/profiles/default", sync({}))
    result = await verify_network_device(client)
    assert result.bridge == "lxdbr0" and result.created_bridge and result.added_nic == "eth0"
    assert fake.requests("POST", "/1.0/networks")[0].body["config"] == {
        "ipv4.address": "auto", "ipv4.nat": "true", "ipv6.address": "none", "ipv6.nat": "false"}
    put = fake.requests("PUT", "/1.0/profiles/default")[0]
    assert put.body["devices"] == {"eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0"}}
    assert put.headers["if-match"] == '"p-etag"'


async def test_s46_legacy_bridge_file_without_the_network_api(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.server_info["api_extensions"] = ["storage"]
    fake.on("GET", "/1.0/profiles/default", sync({"name": "default", "devices": {
        "eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0"}}}))
    good = 'USE_LXD_BRIDGE="true"\nLXD_BRIDGE="lxdbr0"\nLXD_IPV4_ADDR="10.0.4.1"\n'
    result = await verify_network_device(client, read_file=lambda _p: good, snap=False)
    assert result.bridge == "lxdbr0"

    def missing(path: str) -> str:
        raise FileNotFoundError(path)

    with pytest.raises(NetworkVerifyError) as err:
        await verify_network_device(client, read_file=missing, snap=True)
    assert str(err.value) == ('profile "default": no config file found at /var/snap/lxd/common/lxd-bridge/config\n'
                              "It looks like your LXD bridge has not yet been configured.")
    other = good.replace('LXD_BRIDGE="lxdbr0"', 'LXD_BRIDGE="br9"')
    with pytest.raises(NetworkVerifyError, match=r"the following devices were checked: \[eth0\]$"):
        await verify_network_device(client, read_file=lambda _p: other, snap=False)
    assert not [c for c in fake.requests() if c.path.startswith("/1.0/networks")]


# ---------------------------------------------------------------------------------------------- storage


async def test_s49_pool_and_volume_bodies(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("POST", "/1.0/storage-pools", sync({}))
    fake.on("POST", "/1.0/storage-pools/default-pool/volumes/custom", sync({}))
    fake.on("GET", "/1.0/storage-pools/default-pool/volumes/custom/volume", sync({"name": "volume"}))
    await create_pool(client, "new-pool", "dir", {"size": "1024MB"})
    await create_volume(client, "default-pool", "volume", {"size": "1024MB"})
    pool = fake.requests("POST", "/1.0/storage-pools")[0].body
    assert (pool["name"], pool["driver"], pool["config"]) == ("new-pool", "dir", {"size": "1024MB"})
    vol = fake.requests("POST", "/1.0/storage-pools/default-pool/volumes/custom")[0].body
    assert (vol["name"], vol["type"], vol["config"]) == ("volume", "custom", {"size": "1024MB"})


@pytest.mark.parametrize(("pools", "expected", "created"), [
    (["/1.0/storage-pools/default"], "default", False),
    (["/1.0/storage-pools/custom"], "custom", False),
    ([], "default", True),
])
async def test_s50_ensure_default_storage(lxd: tuple[FakeLXD, Client], pools: list[str], expected: str,
                                          created: bool) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/profiles/default", sync({"name": "default", "devices": {}}, etag="p"))
    fake.on("GET", "/1.0/storage-pools", sync(pools))
    fake.on("POST", "/1.0/storage-pools", sync({}))
    fake.on("PUT", "/1.0/profiles/default", sync({}))
    assert await ensure_default_storage(client) == expected
    assert bool(fake.requests("POST", "/1.0/storage-pools")) == created
    if created:
        assert fake.requests("POST", "/1.0/storage-pools")[0].body["driver"] == "dir"
    put = fake.requests("PUT", "/1.0/profiles/default")[0]
    assert put.body["devices"]["root"] == {"type": "disk", "path": "/", "pool": expected}
    assert put.headers["if-match"] == '"p"'


async def test_s50_root_present_sends_nothing(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("GET", "/1.0/profiles/default", sync({"name": "default", "devices": {
        "root": {"type": "disk", "path": "/", "pool": "x"}}}))
    assert await ensure_default_storage(client) is None
    assert fake.sent() == [("GET", "/1.0/profiles/default")]


# ---------------------------------------------------------------------------------------------- images


INDEX = {"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}}
PRODUCTS = {"products": {"com.ubuntu.cloud:server:16.04:amd64": {
    "aliases": "16.04,x,xenial", "arch": "amd64", "os": "ubuntu", "release": "xenial", "version": "16.04",
    "versions": {
        "20200101": {"items": {"lxd.tar.xz": {"combined_squashfs_sha256": "old"}}},
        "20210101": {"items": {"lxd.tar.xz": {"combined_squashfs_sha256": "newfp",
                                              "combined_sha256": "other"}}},
    }}}}


def _streams(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/streams/v1/index.json":
        return httpx.Response(200, json=INDEX)
    if request.url.path == "/streams/v1/images.json":
        return httpx.Response(200, json=PRODUCTS)
    return httpx.Response(404)


async def test_simplestreams_remote_resolves_aliases_to_the_newest_version() -> None:
    remote = SimpleStreamsRemote(ServerSpec(host="https://images.test", protocol="simplestreams"),
                                 transport=httpx.MockTransport(_streams))
    try:
        assert await remote.alias_target("xenial/amd64") == "newfp"
        assert await remote.alias_target("xenial/arm64") is None
        assert (await remote.image("newfp"))["properties"]["release"] == "xenial"
        with pytest.raises(LXDError):
            await remote.image("nope")
    finally:
        await remote.aclose()


async def test_s18_s20_series_search_over_simplestreams_and_a_failing_image_fetch(
        lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    contacted: list[str] = []

    async def connect(spec: ServerSpec) -> Any:
        contacted.append(spec.name)
        if spec.name == "broken":
            return await connect_image_remote(spec)
        remote = SimpleStreamsRemote(spec, transport=httpx.MockTransport(_streams))
        if spec.name == "no-image":
            async def fail(_fp: str) -> dict[str, Any]:
                raise LXDError("failed to retrieve image")
            remote.image = fail  # type: ignore[method-assign]
        return remote

    sources = [ServerSpec(host="https://a", name="broken", protocol="FOOBAR"),
               ServerSpec(host="https://b", name="has-it", protocol="simplestreams"),
               ServerSpec(host="https://c", name="untouched", protocol="simplestreams")]
    found = await find_image(client, series="xenial", arch="amd64", sources=sources, connect=connect)
    assert found.fingerprint == "newfp" and found.server == sources[1] and contacted == ["broken", "has-it"]
    assert fake.requests("GET", "/1.0/images/aliases/juju/xenial/amd64")
    contacted.clear()
    with pytest.raises(LXDError, match=r"failed to retrieve image"):
        await find_image(client, series="xenial", arch="amd64", connect=connect,
                         sources=[ServerSpec(host="https://d", name="no-image", protocol="simplestreams")])


async def test_s19_copy_from_an_lxd_server_carries_its_certificate(lxd: tuple[FakeLXD, Client]) -> None:
    fake, client = lxd
    fake.on("POST", "/1.0/images", operation(fingerprint="fp"))
    fake.on("POST", "/1.0/images/aliases", sync({}))
    spec = ServerSpec(host="https://img:8443", name="img", protocol="incus")
    assert await copy_remote_image(client, ImageSource("fp", spec, certificate="PEM"), ["ab"]) == "fp"
    body = fake.requests("POST", "/1.0/images")[0].body
    assert body["source"] == {"type": "image", "mode": "pull", "server": "https://img:8443", "protocol": "lxd",
                              "fingerprint": "fp", "certificate": "PEM"}
    assert body["aliases"] == [{"name": "ab"}] and body["auto_update"] is False and body["public"] is False
    assert fake.requests("POST", "/1.0/images/aliases")[0].body["name"] == "ab"


async def test_s19_copy_of_a_local_image_is_refused(lxd: tuple[FakeLXD, Client]) -> None:
    _, client = lxd
    with pytest.raises(ImageError):
        await copy_remote_image(client, ImageSource("fp"), ["x"])


async def test_s4_bad_protocol(lxd: tuple[FakeLXD, Client]) -> None:
    with pytest.raises(ValueError, match=r"^bad protocol supplied for connection: FOOBAR$"):
        await connect_image_remote(ServerSpec(host="https://x", protocol="FOOBAR"))
