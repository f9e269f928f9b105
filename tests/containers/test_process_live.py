"""The container API as an outside client sees it: a real gateway process (`python -m app`, as `make run` starts
it) on a loopback port, driven with httpx and websockets. Job streams of a create (websocket and SSE), interactive
exec over the websocket, events, the console, and a 100 MB file through the gateway with its memory measured."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.locallxd.daemon import DaemonInfo
from tests.containers.support import (
    IMAGE,
    free_port,
    remove_all,
    rss_kib,
    start_gateway,
    stop_gateway,
    unique,
)
from tests.support.streams import read_sse as read_sse_with_heartbeats

pytestmark = pytest.mark.backends()  # the console websocket and interactive exec run on LXD and on Incus

PREFIX = unique("tlv")
BIG = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, lxd_daemon: DaemonInfo) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("live")
    port = free_port()
    proc = start_gateway(lxd_daemon, tmp / "data", port, tmp / "gateway.log")
    try:
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        stop_gateway(proc)


@pytest.fixture(scope="module")
async def running(gateway: tuple[str, int], lxd_daemon: DaemonInfo) -> AsyncIterator[str]:
    """One running container shared by the tests of this module."""
    host, _ = gateway
    name = f"{PREFIX}-run"
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=130) as c:
        r = await c.post("/v1/containers", json={"name": name, "image": IMAGE}, params={"wait": 120})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    yield name
    await remove_all(lxd_daemon.socket_path, PREFIX)


async def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, Any]]:
    return (await read_sse_with_heartbeats(response, stop_after))[0]


async def test_create_job_streams_over_websocket_and_sse(gateway: tuple[str, int], lxd_daemon: DaemonInfo) -> None:
    host, _ = gateway
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=60) as c:
        r = await c.post("/v1/containers", json={"name": f"{PREFIX}-ws", "image": IMAGE})
        assert r.status_code == 202, r.text
        job = r.json()
        messages = []
        async with websockets.connect(f"ws://{host}/v1/jobs/{job['id']}/ws") as ws:
            with pytest.raises(ConnectionClosed):
                while True:
                    messages.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            assert ws.close_code == 1000
        types = [m["type"] for m in messages]
        assert types[0] == "snapshot" and types[-1] == "end", types
        assert {"progress", "status"} & set(types[1:-1]), types
        assert messages[-1]["job"]["status"] == "succeeded", messages[-1]
        assert messages[-1]["job"]["result"]["name"] == f"{PREFIX}-ws"

        r = await c.post("/v1/containers", json={"name": f"{PREFIX}-sse", "image": IMAGE})
        url = f"/v1/jobs/{r.json()['id']}/events"
        async with c.stream("GET", url) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            first = await read_sse(resp, stop_after=2)
        assert first[0]["event"] == "snapshot"
        last = first[-1]["id"]
        async with c.stream("GET", url, headers={"Last-Event-ID": str(last)}) as resp:
            rest = await read_sse(resp)
        assert rest and rest[-1]["event"] == "end" and rest[-1]["data"]["job"]["status"] == "succeeded", rest
        ids = [e["id"] for e in first + rest]
        assert len(ids) == len(set(ids)) and all(i > last for i in ids[len(first):])  # nothing repeated
        assert ids == sorted(ids)
    await remove_all(lxd_daemon.socket_path, f"{PREFIX}-ws")
    await remove_all(lxd_daemon.socket_path, f"{PREFIX}-sse")


async def recv_until(ws: Any, needle: bytes, timeout: float = 15) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            msg = await ws.recv()
            assert isinstance(msg, bytes), msg
            seen += msg
    return seen


async def test_interactive_exec_over_websocket(gateway: tuple[str, int], running: str) -> None:
    host, _ = gateway
    async with websockets.connect(f"ws://{host}/v1/containers/{running}/exec/ws") as ws:
        await ws.send(json.dumps({"command": ["sh"], "environment": {"TERM": "dumb"}, "user": 0, "group": 0,
                                  "cwd": "/", "width": 80, "height": 24, "interactive": True}))
        await ws.send(b"echo typed-$((6*7))\n")
        await recv_until(ws, b"typed-42")
        await ws.send(json.dumps({"type": "resize", "width": 123, "height": 45}))
        await asyncio.sleep(0.3)
        await ws.send(b"stty size\n")
        await recv_until(ws, b"45 123")
        await ws.send(b"exit 7\n")
        async with asyncio.timeout(15):
            while True:
                msg = await ws.recv()
                if isinstance(msg, str):
                    break
        assert json.loads(msg) == {"type": "exit", "exit_code": 7}
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1000

    # non-interactive: stdin closed by eof, a signal ends the process
    async with websockets.connect(f"ws://{host}/v1/containers/{running}/exec/ws") as ws:
        await ws.send(json.dumps({"command": ["cat"], "interactive": False}))
        await ws.send(b"through cat")
        await recv_until(ws, b"through cat")
        await ws.send(json.dumps({"type": "eof"}))
        msg = await asyncio.wait_for(ws.recv(), 15)
        assert json.loads(msg) == {"type": "exit", "exit_code": 0}
    async with websockets.connect(f"ws://{host}/v1/containers/{running}/exec/ws") as ws:
        await ws.send(json.dumps({"command": ["sleep", "600"], "interactive": False}))
        await asyncio.sleep(0.5)
        await ws.send(json.dumps({"type": "signal", "signal": "SIGTERM"}))
        msg = await asyncio.wait_for(ws.recv(), 15)
        assert json.loads(msg)["type"] == "exit" and json.loads(msg)["exit_code"] != 0

    # refusals: a missing container closes with 4404 after an error frame
    async with websockets.connect(f"ws://{host}/v1/containers/{PREFIX}-none/exec/ws") as ws:
        await ws.send(json.dumps({"command": ["sh"]}))
        err = json.loads(await ws.recv())
        assert err["type"] == "error" and err["status"] == 404
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4404


async def test_console_websocket_attaches_and_detaches(gateway: tuple[str, int], running: str) -> None:
    host, _ = gateway
    async with websockets.connect(f"ws://{host}/v1/containers/{running}/console") as ws:
        await ws.send(json.dumps({"width": 100, "height": 30}))
        await ws.send(json.dumps({"type": "resize", "width": 120, "height": 40}))
        await ws.send(b"\n")
        with pytest.raises(TimeoutError):  # no error frame: the console is attached
            msg = await asyncio.wait_for(ws.recv(), 1.0)
            while isinstance(msg, bytes):
                msg = await asyncio.wait_for(ws.recv(), 1.0)
            raise AssertionError(f"unexpected frame {msg!r}")


async def test_exec_and_console_sessions_are_audited(gateway: tuple[str, int], running: str) -> None:
    host, _ = gateway
    async with httpx.AsyncClient(base_url=f"http://{host}") as c:
        seen = len((await c.get("/v1/audit", params={"limit": 1000})).json()["items"])
    async with websockets.connect(f"ws://{host}/v1/containers/{running}/exec/ws") as ws:
        await ws.send(json.dumps({"command": ["true"], "interactive": False}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 15)) == {"type": "exit", "exit_code": 0}
    async with websockets.connect(f"ws://{host}/v1/containers/{running}/console") as ws:
        await ws.send(json.dumps({"width": 80, "height": 24}))
        with pytest.raises(TimeoutError):  # attached: nothing but console bytes
            while isinstance(await asyncio.wait_for(ws.recv(), 1.0), bytes):
                pass
    missing = f"{PREFIX}-gone"
    async with websockets.connect(f"ws://{host}/v1/containers/{missing}/exec/ws") as ws:
        await ws.send(json.dumps({"command": ["sh"]}))
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
    async with httpx.AsyncClient(base_url=f"http://{host}") as c:
        for _ in range(50):  # each row is written when its session has ended on the gateway's side
            items = (await c.get("/v1/audit", params={"limit": 1000})).json()["items"]
            rows = [(e["method"], e["path"], e["status"], e["outcome"], e["token"], e["remote"], e["project"])
                    for e in items[:len(items) - seen]]
            if len(rows) == 3:
                break
            await asyncio.sleep(0.2)
    assert sorted(rows) == sorted([
        ("WEBSOCKET", f"/v1/containers/{running}/exec/ws", 101, "ok", "anonymous", "local", "default"),
        ("WEBSOCKET", f"/v1/containers/{running}/console", 101, "ok", "anonymous", "local", "default"),
        ("WEBSOCKET", f"/v1/containers/{missing}/exec/ws", 404, "refused", "anonymous", "local", "default"),
    ]), rows


async def test_events_websocket_passes_lifecycle_events(gateway: tuple[str, int], running: str) -> None:
    host, _ = gateway
    async with websockets.connect(f"ws://{host}/v1/events?type=lifecycle&project=default") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "subscribed" and hello["remote"] == "local"
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=60) as c:
            r = await c.post(f"/v1/containers/{running}/freeze", params={"wait": 30})
            assert r.json()["status"] == "succeeded", r.text
            r = await c.post(f"/v1/containers/{running}/unfreeze", params={"wait": 30})
            assert r.json()["status"] == "succeeded", r.text
        actions = []
        async with asyncio.timeout(15):
            while "instance-resumed" not in actions:
                event = json.loads(await ws.recv())
                assert event["type"] == "lifecycle" and event["remote"] == "local", event
                actions.append(event["metadata"]["action"])
        assert "instance-paused" in actions
    async with websockets.connect(f"ws://{host}/v1/events?type=instance-resumed") as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 10))
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=60) as c:
            await c.post(f"/v1/containers/{running}/freeze", params={"wait": 30})
            await c.post(f"/v1/containers/{running}/unfreeze", params={"wait": 30})
        event = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert event["metadata"]["action"] == "instance-resumed"


async def test_hundred_megabytes_up_and_down_in_bounded_memory(gateway: tuple[str, int], running: str,
                                                               tmp_path: Path) -> None:
    host, pid = gateway
    src = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with src.open("wb") as f:
        block = os.urandom(1 << 20)
        for i in range(BIG >> 20):
            chunk = i.to_bytes(4, "big") + block[4:]
            digest.update(chunk)
            f.write(chunk)
    expected = digest.hexdigest()

    async def body() -> AsyncIterator[bytes]:
        with src.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    url = f"http://{host}/v1/containers/{running}/files"
    async with httpx.AsyncClient(timeout=300) as c:
        await c.get(f"{url}", params={"path": "/etc/hostname"})  # warm up
        before = rss_kib(pid, "VmHWM")
        r = await c.put(url, params={"path": "/root/big.bin"}, content=body(),
                        headers={"Content-Type": "application/octet-stream", "X-File-Mode": "0644"})
        assert r.status_code == 200, r.text
        assert r.json()["size"] == BIG and r.json()["sha256"] == expected
        down = hashlib.sha256()
        size = 0
        async with c.stream("GET", url, params={"path": "/root/big.bin"}) as resp:
            assert resp.status_code == 200 and int(resp.headers["content-length"]) == BIG
            async for chunk in resp.aiter_bytes():
                down.update(chunk)
                size += len(chunk)
        after = rss_kib(pid, "VmHWM")
        assert size == BIG and down.hexdigest() == expected
        growth_mib = (after - before) / 1024
        print(f"gateway peak RSS before {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB, "
              f"growth {growth_mib:.1f} MiB for 100 MiB up and down")
        assert growth_mib < 50, growth_mib
        r = await c.delete(url, params={"path": "/root/big.bin"})
        assert r.status_code == 204


async def test_console_shows_output_and_ends_with_exit_when_the_container_stops(gateway: tuple[str, int]) -> None:
    host, _ = gateway
    name = f"{PREFIX}-con"
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=130) as c:
        r = await c.post("/v1/containers", json={"name": name, "image": IMAGE}, params={"wait": 120})
        assert r.json()["status"] == "succeeded", r.text
        async with websockets.connect(f"ws://{host}/v1/containers/{name}/console") as ws:
            await ws.send(json.dumps({"width": 80, "height": 24}))
            await ws.send(json.dumps({"type": "resize", "width": 100, "height": 30}))
            # Something in the container writes to its console: it arrives on the websocket (written again
            # every few seconds, in case the console was still attaching the first time).
            seen = b""
            async with asyncio.timeout(40):
                while b"console-probe" not in seen:
                    r = await c.post(f"/v1/containers/{name}/exec", params={"wait": 30},
                                     json={"command": ["sh", "-c", "echo console-probe > /dev/console"]})
                    assert r.json()["result"]["exit_code"] == 0, r.text
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5):
                            while b"console-probe" not in seen:
                                frame = await ws.recv()
                                assert isinstance(frame, bytes), frame
                                seen += frame
            stop = await c.post(f"/v1/containers/{name}/stop", json={"force": True}, params={"wait": 60})
            assert stop.json()["status"] == "succeeded", stop.text
            async with asyncio.timeout(20):
                while True:
                    frame = await ws.recv()
                    if isinstance(frame, str):
                        break
            assert json.loads(frame) == {"type": "exit", "exit_code": None}
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        await c.delete(f"/v1/containers/{name}", params={"wait": 60})
