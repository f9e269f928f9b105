"""`WS /v1/events` against the real private LXD: an unknown project is a 404 and leaves no LXD stream (nor reconnect
loop) behind; a stream nobody listens to any more is released; exec secrets and other tokens' command lines are
redacted; a token limited to another project is refused on every stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.lxd.errors import NotFound
from app.lxd.events import IDLE_LINGER
from app.store.tokens import Scope
from tests.containers.support import counting, unique
from tests.support.secured_gateway import Gateway, secured_gateway

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


PREFIX = unique("tev")
HEX_SECRET = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory, lxd_daemon: DaemonInfo) -> AsyncIterator[Gateway]:
    async with secured_gateway(tmp_path_factory.mktemp("events"), lxd_daemon, f"{PREFIX}-run") as gateway:
        yield gateway


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _refused_status(url: str, secret: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, additional_headers=_auth(secret))
    return int(refused.value.response.status_code)


# -- unknown projects, released streams ----------------------------------------------------------------------------

async def test_hundred_event_clients_of_an_unknown_project_get_404_and_leave_no_lxd_reconnect_loop(
        gw: Gateway) -> None:
    reader = gw.token(unique("watcher"), Scope.read)
    async with counting(gw.lxd) as log:
        started = time.monotonic()
        for i in range(100):
            url = f"ws://{gw.host}/v1/events?project={PREFIX}-nosuch{i % 10}"
            assert await _refused_status(url, reader) == 404
        await asyncio.sleep(2.0)
        asked = [p for p in log.events_since(started) if p and p.startswith(PREFIX)]
    assert asked == [], f"{len(asked)} LXD /1.0/events calls for unknown projects"
    assert not [s for s in gw.lxd.events.open_streams if s.startswith(PREFIX)]


async def test_events_stream_of_a_project_stops_once_its_last_client_leaves(gw: Gateway,
                                                                            lxd_daemon: DaemonInfo) -> None:
    reader = gw.token(unique("watcher"), Scope.read)
    project = f"{PREFIX}-proj"
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        await lxd.request("POST", "/1.0/projects", json={"name": project, "config": {}}, scoped=False)
        try:
            # The gateway's read model learns of a project made behind its back from LXD's event, a moment later.
            async with gw.http(reader) as c:
                deadline = time.monotonic() + 10
                while (await c.get("/v1/containers", params={"project": project})).status_code != 200:
                    assert time.monotonic() < deadline, "the gateway never learnt of the new project"
                    await asyncio.sleep(0.05)
            async with counting(gw.lxd) as log:
                for _ in range(100):
                    async with websockets.connect(f"ws://{gw.host}/v1/events?project={project}",
                                                  additional_headers=_auth(reader)) as ws:
                        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
                assert project in gw.lxd.events.open_streams  # reused while clients come and go
                await asyncio.sleep(IDLE_LINGER + 1.5)
                assert project not in gw.lxd.events.open_streams, "the stream outlived its last client"
                opened = log.events_since(0).count(project)
                assert 1 <= opened <= 3, f"{opened} LXD events streams for 100 clients"
                await lxd.request("DELETE", f"/1.0/projects/{project}", scoped=False)
                deleted = time.monotonic()
                await asyncio.sleep(3.0)
                assert log.events_since(deleted) == [], "LXD still gets events calls after every client left"
        finally:
            with contextlib.suppress(NotFound):
                await lxd.request("DELETE", f"/1.0/projects/{project}", scoped=False)


# -- what events show ----------------------------------------------------------------------------------------------

class EventLog:
    """Every message of one events websocket, raw and parsed, read in the background."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.raw: list[str] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            self.raw.append(str(message))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.raw]

    def of_operation(self, op_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("type") == "operation" and e["metadata"].get("id") == op_id]

    def exec_lifecycle(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("type") == "lifecycle"
                and e["metadata"].get("action") == "instance-exec"]

    async def until(self, predicate: Any, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.1)


async def _events_log(gw: Gateway, secret: str) -> EventLog:
    ws = await websockets.connect(f"ws://{gw.host}/v1/events?type=operation&type=lifecycle",
                                  additional_headers=_auth(secret))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
    return EventLog(ws)


def _final(events: list[dict[str, Any]]) -> bool:
    return any(e["metadata"].get("status") == "Success" for e in events)


async def test_events_never_show_exec_websocket_secrets_nor_another_tokens_command_line(gw: Gateway) -> None:
    starter, other = gw.token(unique("starter")), gw.token(unique("other"))
    mark = unique("mark")
    logs = {who: await _events_log(gw, secret) for who, secret in
            (("starter", starter), ("other", other), ("admin", gw.admin))}
    try:
        async with gw.http(starter) as c:
            r = await c.post(f"/v1/containers/{gw.container}/exec", params={"wait": 30},
                             json={"command": ["sh", "-c", f"echo job-{mark}"], "environment": {"KEY": f"env-{mark}"}})
            job = r.json()
            assert job["status"] == "succeeded", job
        job_op = job["lxd_operations"][0]["id"]
        async with websockets.connect(f"ws://{gw.host}/v1/containers/{gw.container}/exec/ws",
                                      additional_headers=_auth(starter)) as ws:
            await ws.send(json.dumps({"command": ["sh", "-c", f"echo shell-{mark}"], "interactive": False}))
            async with asyncio.timeout(15):
                while not (isinstance(msg := await ws.recv(), str) and json.loads(msg)["type"] == "exit"):
                    pass
        mine = logs["starter"]

        def shell_ops(log: EventLog) -> set[str]:
            return {e["metadata"]["id"] for e in log.events() if e.get("type") == "operation"
                    and e["metadata"].get("description") == "Executing command"} - {job_op}

        for log in logs.values():  # everyone sees both exec operations end
            await log.until(lambda log=log: _final(log.of_operation(job_op)) and shell_ops(log)
                            and all(_final(log.of_operation(op)) for op in shell_ops(log)))
        shell_op = shell_ops(mine).pop()
        await asyncio.sleep(0.5)

        for who, log in logs.items():
            for op in (job_op, shell_op):
                for event in log.of_operation(op):
                    fds = event["metadata"]["metadata"]["fds"]
                    assert fds and set(fds.values()) == {"[redacted]"}, (who, event)
            assert not HEX_SECRET.search("".join(log.raw)), f"{who} saw a websocket secret"

        other_text = "".join(logs["other"].raw)
        assert mark not in other_text, "another token saw the command line or environment"
        for op in (job_op, shell_op):
            for event in logs["other"].of_operation(op):
                inner = event["metadata"]["metadata"]
                assert inner["command"] == "[redacted]" and inner["environment"] == "[redacted]", event
        assert logs["other"].exec_lifecycle(), "instance-exec lifecycle events still come, redacted"
        assert all(e["metadata"]["context"]["command"] == "[redacted]" for e in logs["other"].exec_lifecycle())

        shown = [e["metadata"]["metadata"]["command"] for e in mine.of_operation(job_op)]
        assert ["sh", "-c", f"echo job-{mark}"] in shown, shown  # the starter sees its own command line
        assert {"KEY": f"env-{mark}"}.items() <= next(
            e["metadata"]["metadata"]["environment"] for e in mine.of_operation(job_op)
            if e["metadata"]["metadata"]["command"] != "[redacted]").items()
        shown = [e["metadata"]["metadata"]["command"] for e in mine.of_operation(shell_op)]
        assert ["sh", "-c", f"echo shell-{mark}"] in shown, shown
        assert f"job-{mark}" in "".join(logs["admin"].raw)  # admins see every command line
    finally:
        for log in logs.values():
            await log.ws.close()
            log.task.cancel()


async def test_events_never_show_a_trust_token_secret(gw: Gateway) -> None:
    log = await _events_log(gw, gw.token(unique("watcher"), Scope.read))
    issued: dict[str, Any] = {}
    try:
        async with gw.http(gw.admin) as c:
            r = await c.post("/v1/certificates/tokens", json={"name": unique("client")})
            assert r.status_code == 201, r.text
            issued = r.json()
        op_id = issued["operation_id"]
        await log.until(lambda: log.of_operation(op_id))
        for event in log.of_operation(op_id):
            assert event["metadata"]["metadata"]["secret"] == "[redacted]", event
        secret = json.loads(base64.b64decode(issued["token"]))["secret"]
        assert secret not in "".join(log.raw)
    finally:
        await log.ws.close()
        log.task.cancel()
        if issued:  # the unused trust token is withdrawn
            with contextlib.suppress(Exception):
                await gw.lxd.operations.cancel(issued["operation_id"])


# -- project limits on streams -------------------------------------------------------------------------------------

async def test_token_limited_to_another_project_is_refused_on_streams(gw: Gateway) -> None:
    limited = gw.token(unique("elsewhere"), Scope.write, projects=[f"{PREFIX}-other"])
    base = f"ws://{gw.host}"
    for path in ("/v1/events", f"/v1/containers/{gw.container}/exec/ws", f"/v1/containers/{gw.container}/console"):
        assert await _refused_status(f"{base}{path}", limited) in (403, 404), path
    # its own project, which does not exist: 404 before any LXD stream
    assert await _refused_status(f"{base}/v1/events?project={PREFIX}-other", limited) == 404
    async with httpx.AsyncClient(base_url=f"http://{gw.host}", headers=_auth(limited)) as c:
        ticket = (await c.post("/v1/tickets")).json()["ticket"]
    with pytest.raises(InvalidStatus):
        await websockets.connect(f"{base}/v1/events?ticket={ticket}")
