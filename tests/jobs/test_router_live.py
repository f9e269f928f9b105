"""`/v1/jobs` end to end: through ASGI for plain HTTP, and through a real uvicorn server on loopback (serving the same
app) for websockets and Server-Sent Events. Jobs are of the test-only kind `test.sleep` (extension_sleep.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.settings import RemoteSettings, Settings
from tests.support.gateway import serving
from tests.support.streams import read_sse

PROBLEM = "application/problem+json"
EXTENSION = "tests.jobs.extension_sleep"

def jobs_settings(tmp_path: Path, daemon: DaemonInfo, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "remotes": [RemoteSettings(name="local", url=f"unix://{daemon.socket_path}", default=True)],
        "data_dir": tmp_path / "data", "auth_enabled": False, "extensions": [EXTENSION],
        "job_sse_heartbeat_seconds": 0.3, "shutdown_grace_seconds": 0.5, "job_subscriber_queue": 64,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def japp(tmp_path: Path, lxd_daemon: DaemonInfo) -> AsyncIterator[FastAPI]:
    application = create_app(jobs_settings(tmp_path, lxd_daemon))
    async with LifespanManager(application, shutdown_timeout=30):
        yield application


@pytest.fixture
async def jc(japp: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=japp), base_url="http://gw") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def live(japp: FastAPI) -> AsyncIterator[str]:
    """The same app (lifespan already running) served by uvicorn on a loopback port; yields host:port."""
    async with serving(japp) as address:
        yield address


async def start(c: httpx.AsyncClient, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
    return await c.post("/v1/test-jobs", json=body or {}, **kw)


async def test_start_answers_202_with_location_then_200_with_wait(jc: httpx.AsyncClient) -> None:
    r = await start(jc, {"steps": 1, "interval": 0.05})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["kind"] == "test.sleep"
    assert set(job) >= {"id", "kind", "status", "progress", "remote", "project", "resource", "lxd_operations",
                        "created_at", "started_at", "finished_at", "requested_by", "result", "error"}
    assert job["created_at"].endswith("Z") and job["requested_by"] == "anonymous"
    r = await jc.get(f"/v1/jobs/{job['id']}", params={"wait": 10})
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and r.json()["result"] == {"steps": 1}


async def test_wait_answers_as_soon_as_the_job_ends(jc: httpx.AsyncClient) -> None:
    t0 = time.monotonic()
    r = await start(jc, {"steps": 4, "interval": 0.25}, params={"wait": 30})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert 0.9 < elapsed < 3, elapsed
    job_id = (await start(jc, {"steps": 4, "interval": 0.25})).json()["id"]
    t0 = time.monotonic()
    r = await jc.get(f"/v1/jobs/{job_id}", params={"wait": 30})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert time.monotonic() - t0 < 3
    r = await jc.get(f"/v1/jobs/{job_id}", params={"wait": 0})
    assert r.status_code == 200


@pytest.mark.parametrize("wait", ["301", "-1", "abc", "1.5"])
async def test_wait_out_of_range_is_422(jc: httpx.AsyncClient, wait: str) -> None:
    r = await start(jc, {"steps": 0}, params={"wait": wait})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = await jc.get("/v1/jobs/nope", params={"wait": wait})
    assert r.status_code == 422


async def test_failed_job_carries_a_problem(jc: httpx.AsyncClient) -> None:
    r = await start(jc, {"steps": 1, "interval": 0.01, "fail": True}, params={"wait": 10})
    job = r.json()
    assert r.status_code == 200 and job["status"] == "failed"
    assert job["error"]["type"].endswith("/test-failure") and job["error"]["lxd_error"] == "LXD said no"


async def test_list_newest_first_filters_and_cursor(jc: httpx.AsyncClient) -> None:
    ids = [(await start(jc, {"steps": 0}, params={"wait": 10})).json()["id"] for _ in range(5)]
    r = await jc.get("/v1/jobs", params={"limit": 2, "kind": "test.sleep"})
    page = r.json()
    assert r.status_code == 200 and [j["id"] for j in page["items"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["items"]]
    while page["next_cursor"]:
        page = (await jc.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]})).json()
        seen += [j["id"] for j in page["items"]]
    assert seen == ids[::-1]
    assert (await jc.get("/v1/jobs", params={"status": "failed"})).json()["items"] == []
    assert len((await jc.get("/v1/jobs", params={"status": ["succeeded", "failed"]})).json()["items"]) == 5
    r = await jc.get("/v1/jobs", params={"cursor": "not-a-cursor!"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM and r.json()["type"].endswith("/bad-cursor")
    assert (await jc.get("/v1/jobs", params={"limit": 1001})).status_code == 422
    assert (await jc.get("/v1/jobs/does-not-exist")).status_code == 404


async def test_cancel_running_queued_and_ended(jc: httpx.AsyncClient) -> None:
    job = (await start(jc, {"steps": 50, "interval": 0.05})).json()
    await jc.get(f"/v1/jobs/{job['id']}", params={"wait": 0})
    r = await jc.delete(f"/v1/jobs/{job['id']}", params={"wait": 10})
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    r = await jc.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert (await jc.delete("/v1/jobs/nope")).status_code == 404


async def test_fifty_concurrent_same_key_make_one_job(jc: httpx.AsyncClient, japp: FastAPI) -> None:
    body = {"steps": 2, "interval": 0.1, "n": 1}
    headers = {"Idempotency-Key": "same-key-50"}
    rs = await asyncio.gather(*(start(jc, body, headers=headers) for _ in range(50)))
    assert {r.status_code for r in rs} <= {200, 202}
    ids = {r.json()["id"] for r in rs}
    assert len(ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in rs) == 49
    listed = (await jc.get("/v1/jobs", params={"kind": "test.sleep"})).json()["items"]
    assert [j["id"] for j in listed] == list(ids)
    # a replay honours its own wait; key order and `wait` do not change the fingerprint
    r = await jc.post("/v1/test-jobs", content=json.dumps({"n": 1, "interval": 0.1, "steps": 2}),
                      headers={**headers, "content-type": "application/json"}, params={"wait": 10})
    assert r.status_code == 200 and r.json()["id"] in ids and r.headers["idempotent-replayed"] == "true"
    r = await start(jc, {**body, "n": 2}, headers=headers)
    assert r.status_code == 409 and r.json()["type"].endswith("/idempotency-conflict")


async def test_websocket_streams_snapshot_progress_end_then_1000(jc: httpx.AsyncClient, live: str) -> None:
    job = (await start(jc, {"steps": 3, "interval": 0.1, "output": 1})).json()
    messages = []
    async with websockets.connect(f"ws://{live}/v1/jobs/{job['id']}/ws") as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert ws.close_code == 1000
    types = [m["type"] for m in messages]
    assert types[0] == "snapshot" and types[-1] == "end" and "progress" in types and "output" in types
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert messages[-1]["job"]["status"] == "succeeded" and messages[-1]["job"]["result"] == {"steps": 3}
    out = next(m for m in messages if m["type"] == "output")
    assert out["data"]["stream"] == "stdout" and out["data"]["text"].startswith("step 0")
    # an ended job: the job as it is now (`snapshot`), then `end`, then 1000
    async with websockets.connect(f"ws://{live}/v1/jobs/{job['id']}/ws") as ws:
        snapshot, end = json.loads(await ws.recv()), json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1000
    assert (snapshot["type"], end["type"]) == ("snapshot", "end")
    assert snapshot["job"] == end["job"] == messages[-1]["job"]
    assert end["seq"] == messages[-1]["seq"] and snapshot["seq"] == end["seq"] - 1


async def test_websocket_unknown_job_is_404(live: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://{live}/v1/jobs/nope/ws"):
            pass
    assert info.value.response.status_code == 404


async def test_websocket_all_jobs_filtered_by_kind(jc: httpx.AsyncClient, live: str) -> None:
    async with websockets.connect(f"ws://{live}/v1/jobs/ws?kind=test.sleep") as ws, \
            websockets.connect(f"ws://{live}/v1/jobs/ws?kind=other.kind") as other:
        job = (await start(jc, {"steps": 1, "interval": 0.05})).json()
        got: list[dict[str, Any]] = []
        while not got or got[-1]["type"] != "end":
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert {m["job"]["id"] for m in got} == {job["id"]}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.recv(), 0.2)


async def raw_websocket_close_code(host: str, port: int, path: str, idle: float) -> int | None:
    """Open a websocket by hand with a tiny receive buffer, read nothing for `idle` seconds, then read everything
    and return the close code the server sent (None if none)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(idle)
    try:
        async with asyncio.timeout(30):
            while True:
                head = await reader.readexactly(2)
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(await reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(length)
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    finally:
        writer.close()


async def test_websocket_slow_reader_is_closed_1013(jc: httpx.AsyncClient, live: str) -> None:
    job = (await start(jc, {"steps": 400, "interval": 0.0, "output": 10, "pad": 20000})).json()
    host, port = live.split(":")
    code = await raw_websocket_close_code(host, int(port), f"/v1/jobs/{job['id']}/ws", idle=2)
    assert code == 1013
    r = await jc.get(f"/v1/jobs/{job['id']}", params={"wait": 30})
    assert r.json()["status"] == "succeeded"  # the job did not wait for its reader


async def test_sse_stream_resume_without_repeats_and_heartbeats(jc: httpx.AsyncClient, live: str) -> None:
    job = (await start(jc, {"steps": 8, "interval": 0.15})).json()
    url = f"http://{live}/v1/jobs/{job['id']}/events"
    async with httpx.AsyncClient(timeout=20) as c:
        async with c.stream("GET", url) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            first, _ = await read_sse(r, stop_after=3)
        assert first[0]["event"] == "snapshot"
        last = first[-1]["id"]
        await asyncio.sleep(0.4)  # miss a few messages
        async with c.stream("GET", url, headers={"Last-Event-ID": str(last)}) as r:
            rest, _ = await read_sse(r)
        assert rest[0]["id"] == last + 1 and rest[-1]["event"] == "end"
        ids = [e["id"] for e in first + rest]
        assert ids == list(range(ids[0], ids[-1] + 1))  # contiguous: nothing repeated, nothing lost
        assert rest[-1]["data"]["job"]["status"] == "succeeded"
        async with c.stream("GET", url, headers={"Last-Event-ID": str(rest[-1]["id"])}) as r:
            assert await read_sse(r) == ([], 0)  # already seen the end: nothing more
        async with c.stream("GET", url) as r:
            events, _ = await read_sse(r)
        # an ended job: `snapshot` (the job as it is now), then `end`; a resume after the snapshot gets `end`
        assert [e["event"] for e in events] == ["snapshot", "end"]
        assert events[0]["data"]["job"] == events[1]["data"]["job"] and events[1]["id"] == rest[-1]["id"]
        assert events[0]["id"] == events[1]["id"] - 1
        async with c.stream("GET", url, headers={"Last-Event-ID": str(events[0]["id"])}) as r:
            resumed, _ = await read_sse(r)
        assert [(e["event"], e["id"]) for e in resumed] == [("end", events[1]["id"])]
        quiet = (await start(jc, {"steps": 1, "interval": 1.0})).json()
        async with c.stream("GET", f"http://{live}/v1/jobs/{quiet['id']}/events") as r:
            events, heartbeats = await read_sse(r)
        assert heartbeats >= 2 and events[-1]["event"] == "end"
        r = await c.get(f"http://{live}/v1/jobs/nope/events")
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
