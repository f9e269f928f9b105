"""A write token must never reach the host, against the real private LXD: each attack is refused with a 403 that
names the key or device and the rule that would allow it, and nothing is created or changed in LXD. Every attack
runs twice: with a write token in the `default` project, and with a write token limited to another project (which
has its own profiles and cannot act in `default`)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.lxd.errors import LXDError, NotFound
from app.main import create_app
from app.store.tokens import Scope
from tests.containers.support import counting, job_ends
from tests.support.app import make_settings

PREFIX = f"pa{secrets.token_hex(2)}"
IMAGE = {"alias": "busybox"}


@dataclass
class Links:
    """Host interfaces LXD does not manage: a Linux bridge (think: the LAN bridge) and a host NIC (one end of a
    veth pair)."""

    bridge: str
    nic: str
    peer: str
    uplink: str = ""  # a managed `physical` network over `peer`


@pytest.fixture(scope="module")
def links() -> Iterator[Links]:
    tag = secrets.token_hex(3)
    made = Links(bridge=f"gwtb{tag}", nic=f"gwtn{tag}", peer=f"gwtp{tag}")
    try:
        subprocess.run(["ip", "link", "add", made.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "add", made.nic, "type", "veth", "peer", "name", made.peer], check=True)
        yield made
    finally:
        for name in (made.bridge, made.nic):
            subprocess.run(["ip", "link", "del", name], check=False)


@dataclass
class World:
    """A project, a write token acting in it, a container made by the admin there, and LXD seen directly."""

    app: FastAPI
    c: httpx.AsyncClient
    lxd: Client
    project: str
    limited: bool
    target: str
    profiles: list[str] = field(default_factory=list)

    def token(self, *allow: str, scope: Scope = Scope.write) -> dict[str, str]:
        _, secret = self.app.state.tokens.create(f"{PREFIX}-{secrets.token_hex(3)}", [scope], allow=list(allow),
                                                 projects=[self.project] if self.limited else None)
        return {"Authorization": f"Bearer {secret}"}

    async def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return await self.c.request(method, path, headers=headers, params={"project": self.project,
                                                                            **kw.pop("params", {})}, **kw)

    async def profile(self, config: dict[str, str], devices: dict[str, dict[str, str]]) -> str:
        """A profile made outside the gateway, straight through the LXD client."""
        name = f"{PREFIX}-{secrets.token_hex(3)}"
        await self.lxd.profiles.create(name, config=config, devices=devices)
        self.profiles.append(name)
        return name

    async def definition(self, name: str) -> tuple[Any, ...]:
        inst = await self.lxd.instances.get(name)
        return inst.profiles, inst.config, inst.devices

    async def names(self) -> list[str]:
        return sorted(await self.lxd.instances.names())


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory,
                  lxd_daemon: DaemonInfo) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(tmp_path_factory.mktemp("attacks"), lxd_daemon, auth_enabled=True,
                                   rate_limit=""))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                                       timeout=130) as c:
        yield app, c


async def _remove(lxd: Client, name: str) -> None:
    with suppress(LXDError):
        await lxd.instances.set_state(name, "stop", force=True)
    with suppress(NotFound):
        await lxd.instances.delete(name)


@pytest.fixture(scope="module")
async def worlds(gateway: tuple[FastAPI, httpx.AsyncClient], lxd_daemon: DaemonInfo,
                 links: Links) -> AsyncIterator[dict[str, World]]:
    """Torn down before `links`: a container that had taken a host interface gives it back when deleted."""
    app, c = gateway
    other = f"{PREFIX}-p2"
    async with Client.unix(lxd_daemon.socket_path) as root:
        # Its own profiles (and the default project's images and networks), a root disk and a NIC of its own.
        await root.projects.create(other, config={"features.profiles": "true", "features.images": "false",
                                                  "features.storage.volumes": "false"})
        p2 = root.with_project(other)
        await p2.profiles.update("default", {"description": "", "config": {}, "devices": {
            "root": {"type": "disk", "path": "/", "pool": "default"},
            "eth0": {"type": "nic", "nictype": "bridged", "parent": lxd_daemon.bridge, "name": "eth0"}}})
        links.uplink = f"gwtu{secrets.token_hex(3)}"
        await root.networks.create(links.uplink, type="physical", config={"parent": links.peer})
        made = {}
        for key, lxd, project, limited in (("default", root, "default", False), ("other-project", p2, other, True)):
            target = f"{PREFIX}-t-{key[:2]}"
            await lxd.instances.create(target, image="busybox")
            made[key] = World(app, c, lxd, project, limited, target)
        try:
            yield made
        finally:
            for world in made.values():
                for name in await world.lxd.instances.names():
                    if name.startswith(PREFIX):
                        await _remove(world.lxd, name)
                for profile in world.profiles:
                    with suppress(NotFound):
                        await world.lxd.profiles.delete(profile)
            with suppress(LXDError):
                await root.projects.delete(other)
            with suppress(LXDError):
                await root.networks.delete(links.uplink)


@pytest.fixture(params=["default", "other-project"])
def world(request: pytest.FixtureRequest, worlds: dict[str, World]) -> World:
    return worlds[request.param]


def refused(r: httpx.Response, key: str, rule: str | None = None) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/policy") and body["key"] == key, body
    assert rule is None or body["rule"] == rule, body
    assert body["rule"] in body["detail"], body


def proxy_to_lxd(daemon: DaemonInfo) -> dict[str, str]:
    """Inside the container 127.0.0.1:9999 becomes LXD's own unix socket: LXD answers it as `trusted`."""
    return {"type": "proxy", "bind": "container", "listen": "tcp:127.0.0.1:9999",
            "connect": f"unix:{daemon.socket_path}"}


def attacks(daemon: DaemonInfo, links: Links) -> dict[str, tuple[dict[str, str], dict[str, dict[str, str]], str,
                                                                  str]]:
    """(config, devices, the key the 403 names, the rule that would allow it), by attack."""
    return {
        "proxy-to-the-lxd-socket": ({}, {"api": proxy_to_lxd(daemon)}, "devices.api", "device.proxy"),
        "proxy-bound-on-the-host-on-every-address": (
            {}, {"web": {"type": "proxy", "bind": "host", "listen": "tcp:0.0.0.0:18080",
                         "connect": "tcp:127.0.0.1:80"}}, "devices.web", "device.proxy"),
        "physical-nic-takes-a-host-interface": (
            {}, {"eth1": {"type": "nic", "nictype": "physical", "parent": links.nic}}, "devices.eth1.nictype",
            "nic.physical"),
        "nic-on-an-unmanaged-host-bridge": (
            {}, {"eth1": {"type": "nic", "nictype": "bridged", "parent": links.bridge}}, "devices.eth1.parent",
            "nic.unmanaged"),
        "unix-hotplug-device": ({}, {"hp": {"type": "unix-hotplug", "vendorid": "1d6b"}}, "devices.hp",
                                "device.unix-hotplug"),
        "infiniband-device": ({}, {"ib": {"type": "infiniband", "nictype": "physical", "parent": links.nic}},
                              "devices.ib", "device.infiniband"),
        "mount-syscall-interception": ({"security.syscalls.intercept.mount": "true",
                                        "security.syscalls.intercept.mount.allowed": "ext4"},
                                       {}, "security.syscalls.intercept.mount", "security.syscalls.intercept.mount"),
        "mknod-syscall-interception": ({"security.syscalls.intercept.mknod": "true"}, {},
                                       "security.syscalls.intercept.mknod", "security.syscalls.intercept.mknod"),
        "seccomp-default-deny-list-off": ({"security.syscalls.deny_default": "false"}, {},
                                          "security.syscalls.deny_default", "security.syscalls.deny_default"),
        "idmap-base-at-host-root": ({"security.idmap.base": "0"}, {}, "security.idmap.base",
                                    "security.idmap.base"),
        "idmap-size-over-the-host-range": ({"security.idmap.size": "4294967294"}, {}, "security.idmap.size",
                                           "security.idmap.size"),
    }


ATTACK_NAMES = [
    "proxy-to-the-lxd-socket", "proxy-bound-on-the-host-on-every-address", "physical-nic-takes-a-host-interface",
    "nic-on-an-unmanaged-host-bridge", "unix-hotplug-device", "infiniband-device", "mount-syscall-interception",
    "mknod-syscall-interception", "seccomp-default-deny-list-off", "idmap-base-at-host-root",
    "idmap-size-over-the-host-range",
]


@pytest.mark.parametrize("attack", ATTACK_NAMES)
async def test_host_reaching_device_or_config_is_refused_everywhere_a_write_token_sets_it(
        world: World, lxd_daemon: DaemonInfo, links: Links, attack: str) -> None:
    config, devices, key, rule = attacks(lxd_daemon, links)[attack]
    h = world.token()
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    before_names, before_target = await world.names(), await world.definition(world.target)
    async with counting(world.app.state.remotes.get("local")) as log:
        refused(await world.call("POST", "/v1/containers", h, json={"name": name, "image": IMAGE, "config": config,
                                                                    "devices": devices}), key, rule)
        refused(await world.call("PATCH", f"/v1/containers/{world.target}", h,
                                 json={"config": config, "devices": devices}), key, rule)
        for dev_name, device in devices.items():
            refused(await world.call("POST", f"/v1/containers/{world.target}/devices", h,
                                     json={"name": dev_name, "device": device}), key, rule)
        refused(await world.call("POST", "/v1/profiles", h, json={"name": name, "config": config,
                                                                  "devices": devices}), key, rule)
        refused(await world.call("PATCH", "/v1/profiles/default", h, json={"config": config, "devices": devices}),
                key, rule)
    assert log.mutating == [], log.mutating
    assert await world.names() == before_names
    assert await world.definition(world.target) == before_target
    assert name not in await world.lxd.profiles.names()


async def test_a_write_token_limited_to_another_project_cannot_act_in_default(worlds: dict[str, World]) -> None:
    world = worlds["other-project"]
    h = world.token()
    r = await world.c.post("/v1/containers", headers=h, json={"name": f"{PREFIX}-x", "image": IMAGE})
    assert r.status_code == 403 and "project 'default'" in r.json()["detail"], r.text
    r = await world.c.patch("/v1/profiles/default", headers=h, json={"config": {"user.a": "1"}})
    assert r.status_code == 403, r.text


async def _exec(world: World, h: dict[str, str], name: str, command: list[str]) -> dict[str, Any]:
    r = await world.call("POST", f"/v1/containers/{name}/exec", h, json={"command": command},
                         params={"wait": 60})
    return await job_ends(world.c, r)


async def test_proxy_device_to_the_lxd_socket_is_refused(worlds: dict[str, World], lxd_daemon: DaemonInfo) -> None:
    """The attack end to end: refused without a rule; with the admin's `device.proxy` rule the same request passes,
    and from inside the container LXD answers as to a trusted client, which is what the guard keeps away."""
    world = worlds["default"]
    name = f"{PREFIX}-px"
    body = {"name": name, "image": IMAGE, "devices": {"api": proxy_to_lxd(lxd_daemon)}}
    refused(await world.call("POST", "/v1/containers", world.token(), json=body), "devices.api", "device.proxy")
    assert name not in await world.names()
    refused(await world.call("POST", f"/v1/containers/{world.target}/devices", world.token(),
                             json={"name": "api", "device": proxy_to_lxd(lxd_daemon)}), "devices.api")
    assert "api" not in (await world.lxd.instances.get(world.target)).devices

    allowed = world.token("device.proxy")
    job = await job_ends(world.c, await world.call("POST", "/v1/containers", allowed, json=body,
                                                   params={"wait": 120}))
    assert job["status"] == "succeeded", job
    try:
        out = await _exec(world, allowed, name, ["wget", "-q", "-O", "-", "http://127.0.0.1:9999/1.0"])
        assert out["status"] == "succeeded", out
        assert '"auth":"trusted"' in out["result"]["stdout"].replace(" ", ""), out["result"]
    finally:
        await _remove(world.lxd, name)


PROFILE_ATTACKS = {
    "privileged": ({"security.privileged": "true"}, {}, "security.privileged"),
    "raw-lxc": ({"raw.lxc": "lxc.apparmor.profile=unconfined"}, {}, "raw.lxc"),
    "host-root-disk": ({}, {"hostroot": {"type": "disk", "source": "/", "path": "/host"}}, "devices.hostroot.source"),
}


@pytest.mark.parametrize("attack", list(PROFILE_ATTACKS))
async def test_profile_made_outside_the_gateway_is_refused_at_create_and_at_patch_of_profiles(
        world: World, attack: str) -> None:
    config, devices, key = PROFILE_ATTACKS[attack]
    evil = await world.profile(config, devices)
    h = world.token()
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    before = await world.definition(world.target)
    async with counting(world.app.state.remotes.get("local")) as log:
        r = await world.call("POST", "/v1/containers", h, json={"name": name, "image": IMAGE,
                                                                "profiles": ["default", evil], "start": False})
        refused(r, key)
        assert f"profile '{evil}'" in r.json()["detail"]
        refused(await world.call("PATCH", f"/v1/containers/{world.target}", h,
                                 json={"profiles": ["default", evil]}), key)
        # editing it through the gateway is checked too, even by a token that trusts it
        refused(await world.call("PATCH", f"/v1/profiles/{evil}", world.token(f"profile:{evil}"),
                                 json={"config": {"user.note": "x"}}), key)
    assert log.mutating == [], log.mutating
    assert name not in await world.names() and await world.definition(world.target) == before

    # The same profile, trusted by a rule naming it, passes.
    trusted = world.token(f"profile:{evil}")
    r = await world.call("PATCH", f"/v1/containers/{world.target}", trusted, json={"profiles": ["default", evil]})
    assert r.status_code == 200, r.text
    assert (await world.lxd.instances.get(world.target)).profiles == ["default", evil]
    r = await world.call("PATCH", f"/v1/containers/{world.target}", trusted, json={"profiles": ["default"]})
    assert r.status_code == 200, r.text
    # a token trusting it in another project only does not
    refused(await world.call("PATCH", f"/v1/containers/{world.target}", world.token(f"profile:elsewhere/{evil}"),
                             json={"profiles": ["default", evil]}), key)


async def test_unknown_profile_at_create_is_a_clear_422(world: World) -> None:
    r = await world.call("POST", "/v1/containers", world.token(),
                         json={"name": f"{PREFIX}-np", "image": IMAGE, "profiles": ["default", "lgw-no-such"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.profiles.1", r.text


async def test_trusted_profile_creates_a_real_container(worlds: dict[str, World]) -> None:
    world = worlds["default"]
    evil = await world.profile({"security.privileged": "true"}, {})
    name = f"{PREFIX}-tr"
    r = await world.call("POST", "/v1/containers", world.token(f"profile:{evil}"), params={"wait": 120},
                         json={"name": name, "image": IMAGE, "profiles": ["default", evil], "start": False})
    job = await job_ends(world.c, r)
    assert job["status"] == "succeeded", job
    assert (await world.lxd.instances.get(name)).expanded_config.get("security.privileged") == "true"


async def test_copy_of_a_privileged_container_is_refused(world: World) -> None:
    source = f"{PREFIX}-{secrets.token_hex(3)}"
    await world.lxd.instances.create(source, image="busybox", config={"security.privileged": "true"})
    before = await world.names()
    r = await world.call("POST", f"/v1/containers/{source}/copy", world.token(), json={"name": f"{source}-c"})
    refused(r, "security.privileged")
    assert await world.names() == before
    r = await world.call("POST", f"/v1/containers/{source}/copy", world.token("security.privileged"),
                         json={"name": f"{source}-c"}, params={"wait": 120})
    assert (await job_ends(world.c, r))["status"] == "succeeded"


async def test_restore_of_a_snapshot_taken_with_a_forbidden_key_is_refused(world: World) -> None:
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    await world.lxd.instances.create(name, image="busybox", config={"security.nesting": "true"})
    await world.lxd.instances.create_snapshot(name, "nested")
    inst = await world.lxd.instances.get(name)
    body = inst.writable()
    body["config"] = {k: v for k, v in body["config"].items() if k != "security.nesting"}
    await world.lxd.instances.update(name, body, etag=inst.etag)  # the admin removes it again
    before = await world.definition(name)
    async with counting(world.app.state.remotes.get("local")) as log:
        r = await world.call("POST", f"/v1/containers/{name}/snapshots/nested/restore", world.token())
        refused(r, "security.nesting", "security.nesting")
    assert log.mutating == [] and await world.definition(name) == before
    r = await world.call("POST", f"/v1/containers/{name}/snapshots/nested/restore",
                         world.token("security.nesting"), params={"wait": 60})
    assert (await job_ends(world.c, r))["status"] == "succeeded"
    assert (await world.lxd.instances.get(name)).config.get("security.nesting") == "true"


async def test_nic_on_the_managed_bridge_works_and_host_interfaces_do_not(world: World, lxd_daemon: DaemonInfo,
                                                                         links: Links) -> None:
    h = world.token()
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    r = await world.call("POST", "/v1/containers", h, params={"wait": 120}, json={
        "name": name, "image": IMAGE, "start": False,
        "devices": {"eth1": {"type": "nic", "nictype": "bridged", "parent": lxd_daemon.bridge},
                    "eth2": {"type": "nic", "network": lxd_daemon.bridge}}})
    job = await job_ends(world.c, r)
    assert job["status"] == "succeeded", job
    r = await world.call("POST", f"/v1/containers/{name}/devices", h,
                         json={"name": "eth3", "device": {"type": "nic", "nictype": "macvlan",
                                                          "parent": lxd_daemon.bridge}})
    assert r.status_code == 201, r.text
    for device, key in (({"type": "nic", "nictype": "bridged", "parent": links.bridge}, "devices.eth4.parent"),
                        ({"type": "nic", "nictype": "macvlan", "parent": links.nic}, "devices.eth4.parent"),
                        ({"type": "nic", "nictype": "physical", "parent": links.nic}, "devices.eth4.nictype"),
                        # managed by LXD, but a physical network hands the host interface to the container
                        ({"type": "nic", "network": links.uplink}, "devices.eth4.network")):
        refused(await world.call("POST", f"/v1/containers/{name}/devices", h,
                                 json={"name": "eth4", "device": device}), key)
        refused(await world.call("POST", "/v1/profiles", h, json={"name": f"{name}-p", "devices": {"eth4": device}}),
                key)
    assert set((await world.lxd.instances.get(name)).devices) == {"eth1", "eth2", "eth3"}
    # the rule naming the kind lets it through
    r = await world.call("POST", f"/v1/containers/{name}/devices", world.token("nic.unmanaged"),
                         json={"name": "eth4", "device": {"type": "nic", "nictype": "bridged",
                                                          "parent": links.bridge}})
    assert r.status_code == 201, r.text


async def test_custom_volume_with_idmap_shifting_is_refused(worlds: dict[str, World]) -> None:
    """`security.shifted` on a custom volume lets containers of other idmaps share (and own) its files. (The other
    project shares its volumes with `default`: see the test after this one.)"""
    world = worlds["default"]
    name = f"{PREFIX}-v{secrets.token_hex(3)}"
    path = "/v1/storage-pools/default/volumes"
    try:
        async with counting(world.app.state.remotes.get("local")) as log:
            r = await world.call("POST", path, world.token(), json={"name": name,
                                                                     "config": {"security.shifted": "true"}})
            refused(r, "security.shifted", "volume.security.shifted")
        assert log.mutating == []
        assert name not in {v.name for v in await world.lxd.storage.volumes("default", vtype="custom")}
        r = await world.call("POST", path, world.token(), json={"name": name, "config": {"size": "16MiB"}})
        assert r.status_code == 201, r.text
        r = await world.call("POST", path, world.token("volume.security.*"),
                             json={"name": f"{name}s", "config": {"security.shifted": "true"}})
        assert r.status_code == 201, r.text
        assert (await world.lxd.storage.volume("default", f"{name}s")).config.get("security.shifted") == "true"
    finally:
        for vol in (name, f"{name}s"):
            with suppress(NotFound):
                await world.lxd.storage.delete_volume("default", vol)


async def test_a_token_limited_to_a_project_cannot_change_what_it_shares_with_default(
        worlds: dict[str, World]) -> None:
    """The other project has no images or volumes of its own (LXD's `features.images`/`features.storage.volumes`
    off): through it, a token limited to it would change `default`'s."""
    world, default = worlds["other-project"], worlds["default"]
    h = world.token()
    volume = f"{PREFIX}-s{secrets.token_hex(3)}"
    images_before = [i.fingerprint for i in await default.lxd.images.list()]
    async with counting(world.app.state.remotes.get("local")) as log:
        r = await world.call("POST", "/v1/storage-pools/default/volumes", h, json={"name": volume})
        assert r.status_code == 403 and r.json()["type"].endswith("/shared-with-default"), r.text
        r = await world.call("DELETE", f"/v1/images/{images_before[0]}", h)
        assert r.status_code == 403 and r.json()["type"].endswith("/shared-with-default"), r.text
        r = await world.call("POST", "/v1/images/aliases", h, json={"name": f"{PREFIX}-a", "target": images_before[0]})
        assert r.status_code == 403, r.text
    assert log.mutating == []
    assert [i.fingerprint for i in await default.lxd.images.list()] == images_before
    assert volume not in {v.name for v in await default.lxd.storage.volumes("default", vtype="custom")}
    # its own profiles are its own: changing them is fine
    r = await world.call("PATCH", "/v1/profiles/default", h, json={"config": {"user.team": "p2"}})
    assert r.status_code == 200, r.text


async def test_editing_a_profile_that_masks_a_forbidden_profile_is_refused(world: World) -> None:
    """A profile made outside the gateway is privileged; a second one masks it (the last value wins), so a container
    with both passes. Removing the mask would make that container privileged: refused."""
    base = await world.profile({"security.privileged": "true"}, {})
    h = world.token()
    mask = f"{PREFIX}-m{secrets.token_hex(3)}"
    r = await world.call("POST", "/v1/profiles", h, json={"name": mask, "config": {"security.privileged": "false"}})
    assert r.status_code == 201, r.text
    world.profiles.append(mask)
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    r = await world.call("POST", "/v1/containers", h, params={"wait": 120},
                         json={"name": name, "image": IMAGE, "profiles": ["default", base, mask], "start": False})
    assert (await job_ends(world.c, r))["status"] == "succeeded"
    before = (await world.lxd.profiles.get(mask)).config
    r = await world.call("PATCH", f"/v1/profiles/{mask}", h, json={"config": {"security.privileged": None}})
    refused(r, "security.privileged")
    assert name in r.json()["detail"], r.text
    r = await world.call("PUT", f"/v1/profiles/{mask}", h, json={"description": "", "config": {}, "devices": {}})
    refused(r, "security.privileged")
    assert (await world.lxd.profiles.get(mask)).config == before
    r = await world.call("PATCH", f"/v1/profiles/{mask}", h, json={"config": {"user.team": "ci"}})
    assert r.status_code == 200, r.text  # an edit that keeps the mask is fine


async def test_a_write_token_cannot_exec_in_or_touch_the_files_of_a_container_it_could_not_have_made(
        world: World) -> None:
    """Another token (allowed by a rule) made a privileged container: root in it is root on the host."""
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    await world.lxd.instances.create(name, image="busybox", config={"security.privileged": "true"})
    await world.lxd.instances.set_state(name, "start")
    h = world.token()
    async with counting(world.app.state.remotes.get("local")) as log:
        refused(await world.call("POST", f"/v1/containers/{name}/exec", h, json={"command": ["id"]}),
                "security.privileged")
        refused(await world.call("GET", f"/v1/containers/{name}/files", h, params={"path": "/etc/hostname"}),
                "security.privileged")
        refused(await world.call("PUT", f"/v1/containers/{name}/files", h, params={"path": "/root/x"},
                                 content=b"x"), "security.privileged")
        refused(await world.call("POST", f"/v1/containers/{name}/restart", h), "security.privileged")
    assert log.mutating == []
    r = await world.call("POST", f"/v1/containers/{name}/exec", world.token("security.privileged"),
                         json={"command": ["true"]}, params={"wait": 60})
    assert (await job_ends(world.c, r))["status"] == "succeeded"
    r = await world.call("POST", f"/v1/containers/{name}/stop", h, json={"force": True}, params={"wait": 60})
    assert (await job_ends(world.c, r))["status"] == "succeeded"  # stopping it gives nothing away
    async with counting(world.app.state.remotes.get("local")) as log:
        refused(await world.call("GET", f"/v1/containers/{name}/logs", h), "security.privileged")
        # its image would carry its files into a container the token may use
        r = await world.call("POST", f"/v1/containers/{name}/publish", h, json={})
        if world.limited:  # this project shares its images with `default`
            assert r.status_code == 403 and r.json()["type"].endswith("/shared-with-default"), r.text
        else:
            refused(r, "security.privileged")
    assert log.mutating == []


async def test_a_read_token_does_not_see_secret_config_in_job_results(worlds: dict[str, World]) -> None:
    world = worlds["default"]
    writer, reader = world.token(), world.token(scope=Scope.read)
    name = f"{PREFIX}-{secrets.token_hex(3)}"
    r = await world.call("POST", "/v1/containers", writer, params={"wait": 120},
                         json={"name": name, "image": IMAGE, "start": False,
                               "config": {"environment.API_KEY": "s3cret-value", "user.team": "ci"}})
    job = await job_ends(world.c, r)
    assert job["status"] == "succeeded" and job["result"]["config"]["environment.API_KEY"] == "s3cret-value"
    got = (await world.call("GET", f"/v1/jobs/{job['id']}", reader)).json()
    listed = (await world.call("GET", "/v1/jobs", reader, params={"kind": "container.create", "limit": 1000})).json()
    shown = [got, *[j for j in listed["items"] if j["id"] == job["id"]]]
    assert len(shown) == 2
    for j in shown:
        assert j["result"]["config"]["environment.API_KEY"] == "[redacted]", j
        assert j["result"]["config"]["user.team"] == "ci"
        assert "s3cret-value" not in str(j)
