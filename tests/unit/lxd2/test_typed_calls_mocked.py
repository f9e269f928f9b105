"""The typed calls the gateway's services use instead of raw requests: the requests they send on the wire and the
objects they return."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from app.lxd import Client
from app.lxd.models import InstanceCreate, StatusCode
from app.lxd.transport import Transport
from tests.unit.lxd2.conftest import Fake, async_op, op_state, server_info, sync


def _body(route: Any, i: int = -1) -> Any:
    return json.loads(route.calls[i].request.content)


def _params(route: Any, i: int = -1) -> dict[str, str]:
    return dict(route.calls[i].request.url.params)


async def test_get_with_recursion_reads_the_state_typed(lxd: Client, fake: Fake) -> None:
    state = {"status": "Running", "status_code": 103, "network": {"eth0": {"addresses": [
        {"family": "inet", "address": "10.0.0.5", "netmask": "24", "scope": "global"}]}}}
    route = fake.router.get("/1.0/instances/c1").mock(return_value=sync(
        {"name": "c1", "status": "Running", "state": state}, etag="e1"))
    inst = await lxd.instances.get("c1", recursion=1)
    assert _params(route) == {"recursion": "1", "project": "default"}
    assert inst.etag == "e1" and inst.state is not None and inst.state.status_code == 103
    assert inst.state.network is not None and inst.state.network["eth0"].addresses[0].address == "10.0.0.5"
    fake.router.get("/1.0/instances/c2").mock(return_value=sync({"name": "c2"}))
    plain = await lxd.instances.get("c2")
    assert plain.state is None and "recursion" not in _params(fake.router.routes[-1])


async def test_state_etag_is_sent_back_on_set_state(lxd: Client, fake: Fake) -> None:
    fake.router.get("/1.0/instances/c1/state").mock(return_value=sync({"status": "Running", "status_code": 103},
                                                                      etag="st-1"))
    put = fake.router.put("/1.0/instances/c1/state").mock(return_value=sync(None))
    state = await lxd.instances.state("c1")
    assert state.etag == "st-1"
    await lxd.instances.set_state("c1", "stop", force=True, timeout=-1, etag=state.etag)
    assert put.calls[-1].request.headers["if-match"] == '"st-1"'
    assert _body(put) == {"action": "stop", "force": True, "stateful": False, "timeout": -1}


async def test_start_sends_lxd_timeout_only_when_given(lxd: Client, fake: Fake) -> None:
    put = fake.router.put("/1.0/instances/c1/state").mock(return_value=sync(None))
    await lxd.instances.start("c1", timeout=-1)
    assert _body(put) == {"action": "start", "timeout": -1, "force": False, "stateful": False}
    await lxd.instances.start("c1")
    assert _body(put) == {"action": "start", "force": False, "stateful": False}
    assert "if-match" not in put.calls[-1].request.headers


async def test_create_from_sends_the_body_as_given_with_target(lxd: Client, fake: Fake) -> None:
    post = fake.router.post("/1.0/instances").mock(return_value=async_op("op-c"))
    fake.router.get("/1.0/operations/op-c").mock(return_value=sync(op_state("op-c", 200)))
    fake.router.get("/1.0/operations/op-c/wait").mock(return_value=sync(op_state("op-c", 200)))
    body = InstanceCreate(name="c1", profiles=["default"], config={}, devices={}, ephemeral=False,
                          source={"type": "image", "fingerprint": "fp"})
    await lxd.instances.create_from(body, target="node2")
    assert _body(post) == {"name": "c1", "type": "container", "profiles": ["default"], "config": {},
                           "devices": {}, "ephemeral": False, "source": {"type": "image", "fingerprint": "fp"}}
    assert _params(post) == {"target": "node2", "project": "default"}
    await lxd.instances.create_from(InstanceCreate(name="c2", architecture="x86_64"))
    assert _body(post) == {"name": "c2", "type": "container", "source": {"type": "none"}, "architecture": "x86_64"}
    assert "target" not in _params(post)


async def test_storage_names_and_profiles_create_minimal_body(lxd: Client, fake: Fake) -> None:
    route = fake.router.get("/1.0/storage-pools").mock(return_value=sync(
        ["/1.0/storage-pools/default", "/1.0/storage-pools/fast?target=m1"]))
    assert await lxd.storage.names() == ["default", "fast"]
    assert "project" not in _params(route)
    post = fake.router.post("/1.0/profiles").mock(return_value=sync(None))
    fake.router.get("/1.0/profiles/p1").mock(return_value=sync({"name": "p1", "config": {"k": "v"}}))
    created = await lxd.profiles.create("p1", config={"k": "v"})
    assert _body(post) == {"name": "p1", "config": {"k": "v"}} and created.config == {"k": "v"}
    await lxd.profiles.create("p1", devices={"root": {"type": "disk"}}, description="d")
    assert _body(post) == {"name": "p1", "config": {}, "devices": {"root": {"type": "disk"}}, "description": "d"}


async def test_ping_goes_to_the_server_every_time(make_client: Callable[..., Client], fake: Fake) -> None:
    async with make_client() as lxd:
        info = fake.router.get("/1.0").mock(return_value=sync(server_info()))
        await lxd.server_info()
        await lxd.server_info()
        assert info.call_count == 1  # cached
        await lxd.server.ping()
        await lxd.server.ping()
        assert info.call_count == 3 and "project" not in _params(info)


async def test_with_target_adds_the_member_and_keeps_the_project(lxd: Client, fake: Fake) -> None:
    route = fake.router.get("/1.0/profiles").mock(return_value=sync(["/1.0/profiles/default"]))
    targeted = lxd.with_target("node1")
    assert await targeted.profiles.names() == ["default"]
    assert _params(route) == {"project": "default", "target": "node1"}
    scoped = targeted.with_project("p2")
    await scoped.profiles.names()
    assert _params(route) == {"project": "p2", "target": "node1"}
    await lxd.profiles.names()
    assert _params(route) == {"project": "default"}
    await targeted.aclose()  # closes nothing: the parent still works
    await lxd.profiles.names()


async def test_unscoped_client_sends_no_project(fake: Fake) -> None:
    fake.router.get("/1.0").mock(return_value=sync({"environment": {"server": "lxd"}}))
    alias = fake.router.get("/1.0/images/aliases/jammy%2Famd64").mock(return_value=sync(
        {"name": "jammy/amd64", "target": "fp1", "type": "container"}))
    t = Transport("http://lxd", uds=fake.sock, http_transport=httpx.MockTransport(fake.router.async_handler))
    async with Client(t, project=None) as public:
        got = await public.images.alias("jammy/amd64")
    assert got.target == "fp1" and got.type == "container" and _params(alias) == {}


def test_one_status_table_names_lxd_codes() -> None:
    assert StatusCode(102).label == "Stopped" and StatusCode.CREATED.label == "Operation created"
    assert StatusCode.label_of(112) == "Error" and StatusCode.label_of(999, "Odd") == "Odd"
    assert StatusCode.label_of(None, "Running") == "Running"
    assert StatusCode.SUCCESS.final and not StatusCode.RUNNING.final
