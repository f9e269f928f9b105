"""The typed calls the gateway's services use instead of raw requests: the requests they send on the wire and the
objects they return (on the fake LXD)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from app.lxd import Client
from app.lxd.models import InstanceCreate, StatusCode
from app.lxd.transport import Transport
from tests.fakes.lxd import FakeLXD, async_op, op_state, server_info, sync


def _last(fake: FakeLXD, method: str, path: str) -> Any:
    return fake.requests(method, path)[-1]


async def test_get_with_recursion_reads_the_state_typed(fake_client: Client, fake_lxd: FakeLXD) -> None:
    state = {"status": "Running", "status_code": 103, "network": {"eth0": {"addresses": [
        {"family": "inet", "address": "10.0.0.5", "netmask": "24", "scope": "global"}]}}}
    fake_lxd.on("GET", "/1.0/instances/c1", sync({"name": "c1", "status": "Running", "state": state}, etag="e1"))
    inst = await fake_client.instances.get("c1", recursion=1)
    assert _last(fake_lxd, "GET", "/1.0/instances/c1").params == {"recursion": "1", "project": "default"}
    assert inst.etag == "e1" and inst.state is not None and inst.state.status_code == 103
    assert inst.state.network is not None and inst.state.network["eth0"].addresses[0].address == "10.0.0.5"
    fake_lxd.on("GET", "/1.0/instances/c2", sync({"name": "c2"}))
    plain = await fake_client.instances.get("c2")
    assert plain.state is None and "recursion" not in _last(fake_lxd, "GET", "/1.0/instances/c2").params


async def test_state_etag_is_sent_back_on_set_state(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("GET", "/1.0/instances/c1/state", sync({"status": "Running", "status_code": 103}, etag="st-1"))
    fake_lxd.on("PUT", "/1.0/instances/c1/state", sync(None))
    state = await fake_client.instances.state("c1")
    assert state.etag == "st-1"
    await fake_client.instances.set_state("c1", "stop", force=True, timeout=-1, etag=state.etag)
    put = _last(fake_lxd, "PUT", "/1.0/instances/c1/state")
    assert put.headers["if-match"] == '"st-1"'
    assert put.body == {"action": "stop", "force": True, "stateful": False, "timeout": -1}


async def test_start_sends_lxd_timeout_only_when_given(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("PUT", "/1.0/instances/c1/state", sync(None))
    await fake_client.instances.start("c1", timeout=-1)
    assert _last(fake_lxd, "PUT", "/1.0/instances/c1/state").body == {
        "action": "start", "timeout": -1, "force": False, "stateful": False}
    await fake_client.instances.start("c1")
    put = _last(fake_lxd, "PUT", "/1.0/instances/c1/state")
    assert put.body == {"action": "start", "force": False, "stateful": False}
    assert "if-match" not in put.headers


async def test_create_from_sends_the_body_as_given_with_target(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("POST", "/1.0/instances", async_op("op-c"))
    fake_lxd.on("GET", "/1.0/operations/op-c", sync(op_state("op-c", 200)))
    fake_lxd.on("GET", "/1.0/operations/op-c/wait", sync(op_state("op-c", 200)))
    body = InstanceCreate(name="c1", profiles=["default"], config={}, devices={}, ephemeral=False,
                          source={"type": "image", "fingerprint": "fp"})
    await fake_client.instances.create_from(body, target="node2")
    post = _last(fake_lxd, "POST", "/1.0/instances")
    assert post.body == {"name": "c1", "type": "container", "profiles": ["default"], "config": {},
                         "devices": {}, "ephemeral": False, "source": {"type": "image", "fingerprint": "fp"}}
    assert post.params == {"target": "node2", "project": "default"}
    await fake_client.instances.create_from(InstanceCreate(name="c2", architecture="x86_64"))
    post = _last(fake_lxd, "POST", "/1.0/instances")
    assert post.body == {"name": "c2", "type": "container", "source": {"type": "none"}, "architecture": "x86_64"}
    assert "target" not in post.params


async def test_storage_names_and_profiles_create_minimal_body(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("GET", "/1.0/storage-pools", sync(["/1.0/storage-pools/default", "/1.0/storage-pools/fast?target=m1"]))
    assert await fake_client.storage.names() == ["default", "fast"]
    assert "project" not in _last(fake_lxd, "GET", "/1.0/storage-pools").params
    fake_lxd.on("POST", "/1.0/profiles", sync(None))
    fake_lxd.on("GET", "/1.0/profiles/p1", sync({"name": "p1", "config": {"k": "v"}}))
    created = await fake_client.profiles.create("p1", config={"k": "v"})
    assert _last(fake_lxd, "POST", "/1.0/profiles").body == {"name": "p1", "config": {"k": "v"}}
    assert created.config == {"k": "v"}
    await fake_client.profiles.create("p1", devices={"root": {"type": "disk"}}, description="d")
    assert _last(fake_lxd, "POST", "/1.0/profiles").body == {
        "name": "p1", "config": {}, "devices": {"root": {"type": "disk"}}, "description": "d"}


async def test_ping_goes_to_the_server_every_time(make_fake_client: Callable[..., Client],
                                                  fake_lxd: FakeLXD) -> None:
    async with make_fake_client() as lxd:
        fake_lxd.on("GET", "/1.0", sync(server_info()))
        await lxd.server_info()
        await lxd.server_info()
        assert fake_lxd.count("GET", "/1.0") == 1  # cached
        await lxd.server.ping()
        await lxd.server.ping()
        assert fake_lxd.count("GET", "/1.0") == 3 and "project" not in _last(fake_lxd, "GET", "/1.0").params


async def test_with_target_adds_the_member_and_keeps_the_project(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("GET", "/1.0/profiles", sync(["/1.0/profiles/default"]))
    targeted = fake_client.with_target("node1")
    assert await targeted.profiles.names() == ["default"]
    assert _last(fake_lxd, "GET", "/1.0/profiles").params == {"project": "default", "target": "node1"}
    scoped = targeted.with_project("p2")
    await scoped.profiles.names()
    assert _last(fake_lxd, "GET", "/1.0/profiles").params == {"project": "p2", "target": "node1"}
    await fake_client.profiles.names()
    assert _last(fake_lxd, "GET", "/1.0/profiles").params == {"project": "default"}
    await targeted.aclose()  # closes nothing: the parent still works
    await fake_client.profiles.names()


async def test_unscoped_client_sends_no_project(fake_lxd: FakeLXD) -> None:
    fake_lxd.on("GET", "/1.0", sync({"environment": {"server": "lxd"}}))
    fake_lxd.on("GET", "/1.0/images/aliases/jammy/amd64", sync(
        {"name": "jammy/amd64", "target": "fp1", "type": "container"}))
    t = Transport("http://lxd", uds=fake_lxd.sock, http_transport=httpx.MockTransport(fake_lxd.handler))
    async with Client(t, project=None) as public:
        got = await public.images.alias("jammy/amd64")
    assert got.target == "fp1" and got.type == "container"
    assert _last(fake_lxd, "GET", "/1.0/images/aliases/jammy/amd64").params == {}


def test_one_status_table_names_lxd_codes() -> None:
    assert StatusCode(102).label == "Stopped" and StatusCode.CREATED.label == "Operation created"
    assert StatusCode.label_of(112) == "Error" and StatusCode.label_of(999, "Odd") == "Odd"
    assert StatusCode.label_of(None, "Running") == "Running"
    assert StatusCode.SUCCESS.final and not StatusCode.RUNNING.final
