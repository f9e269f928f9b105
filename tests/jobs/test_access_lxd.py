"""Jobs belong to their caller, against the real private LXD, through a real uvicorn server with tokens: a token
reaches only the jobs within its remote and project limits (list, GET, every stream, cancel), sees the params and
output of its own jobs only (admins see all), and a listing stays small whatever the jobs printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.lxd.errors import NotFound
from app.main import create_app
from app.store.tokens import Scope
from tests.containers.support import IMAGE, remove_all, unique
from tests.support.app import make_settings
from tests.support.gateway import serving
from tests.support.streams import read_sse

PROBLEM = "application/problem+json"
CAP = 256 * 1024
CMD_MARKER = "cmdline-marker-7f3a"
OUT_MARKER = "leaked-output-9c1e"  # printed by the command, never written in it
PRINTING = ["sh", "-c", "for i in 1 2 3 4; do printf 'leaked-%s-%s\\n' output-9c1e $i; sleep 0.4; done; "
            f": {CMD_MARKER}"]


@dataclass
class Gateway:
    app: FastAPI
    address: str
    container: str
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def client(self, who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://{self.address}", headers=self.headers(who), timeout=60)

    def ws(self, who: str, path: str) -> Any:
        return websockets.connect(f"ws://{self.address}{path}", additional_headers=self.headers(who),
                                  max_size=None)


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory, lxd_daemon: DaemonInfo) -> AsyncIterator[Gateway]:
    tmp = tmp_path_factory.mktemp("job-access")
    app = create_app(make_settings(tmp, lxd_daemon, auth_enabled=True, rate_limit="",
                                   extensions=["tests.jobs.extension_sleep"], job_output_max_bytes=CAP,
                                   job_sse_heartbeat_seconds=0.5))
    tokens = {
        "admin": app.state.tokens.create("admin", [Scope.admin])[1],
        "writer": app.state.tokens.create("writer", [Scope.write])[1],
        "reader": app.state.tokens.create("reader", [Scope.read])[1],
        "reader-p2": app.state.tokens.create("reader-p2", [Scope.read], projects=["p2"])[1],
        "writer-p2": app.state.tokens.create("writer-p2", [Scope.write], projects=["p2"])[1],
    }
    created_p2 = False
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        if "p2" not in await lxd.projects.names():
            await lxd.projects.create("p2", config={"features.images": "false", "features.profiles": "false"})
            created_p2 = True
    prefix = unique("tja")
    name = f"{prefix}-a"
    try:
        async with LifespanManager(app, shutdown_timeout=30), serving(app) as address:
            g = Gateway(app, address, name, tokens)
            async with g.client("admin") as c:
                r = await c.post("/v1/containers", json={"name": name, "image": IMAGE}, params={"wait": 120})
                assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            yield g
    finally:
        await remove_all(lxd_daemon.socket_path, prefix)
        if created_p2:
            async with Client.unix(lxd_daemon.socket_path) as lxd:
                with contextlib.suppress(NotFound):
                    await lxd.projects.delete("p2")


async def start_exec(g: Gateway, who: str, body: dict[str, Any], wait: int = 0) -> dict[str, Any]:
    async with g.client(who) as c:
        r = await c.post(f"/v1/containers/{g.container}/exec", json=body, params={"wait": wait})
    assert r.status_code in (200, 202), r.text
    return r.json()  # type: ignore[no-any-return]


async def read_ws(ws: Any, *, until_end_of: str | None = None, timeout: float = 30) -> list[str]:
    """Raw text frames until the server closes (or, on the all-jobs socket, until `end` of one job)."""
    frames: list[str] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                frame = await ws.recv()
                frames.append(frame)
                m = json.loads(frame)
                if until_end_of is not None and m["type"] == "end" and m["job"]["id"] == until_end_of:
                    break
    return frames


async def read_sse_raw(g: Gateway, who: str, job_id: str) -> tuple[int, str, list[dict[str, Any]]]:
    async with g.client(who) as c, c.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        if r.status_code != 200:
            return r.status_code, (await r.aread()).decode(), []
        events, _ = await read_sse(r)
    return 200, json.dumps(events), events


async def test_a_token_limited_to_another_project_does_not_see_an_admins_exec_job(gw: Gateway) -> None:
    async with gw.ws("reader-p2", "/v1/jobs/ws") as p2_all, gw.ws("reader", "/v1/jobs/ws") as control_all:
        job = await start_exec(gw, "admin", {"command": PRINTING})
        job_id = job["id"]
        async with gw.client("reader-p2") as c:
            # while it runs: not listed, not readable, not streamable
            assert job_id not in [j["id"] for j in (await c.get("/v1/jobs")).json()["items"]]
            assert (await c.get("/v1/jobs", params={"project": "default"})).json()["items"] == []
            for params in ({}, {"wait": 1}):
                r = await c.get(f"/v1/jobs/{job_id}", params=params)
                assert r.status_code == 404 and r.headers["content-type"] == PROBLEM, r.text
            with pytest.raises(InvalidStatus) as denied:
                async with gw.ws("reader-p2", f"/v1/jobs/{job_id}/ws"):
                    pass
            assert denied.value.response.status_code == 404
            status, body, _ = await read_sse_raw(gw, "reader-p2", job_id)
            assert status == 404 and OUT_MARKER not in body
        control = await read_ws(control_all, until_end_of=job_id)
        assert any(json.loads(f)["job"]["id"] == job_id for f in control)  # the job did stream, to others
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                leaked = await p2_all.recv()
                raise AssertionError(f"a p2 token got a message of a default-project job: {leaked[:200]}")
    async with gw.client("reader-p2") as c:
        # once ended (read from the store): still nothing
        assert job_id not in [j["id"] for j in (await c.get("/v1/jobs")).json()["items"]]
        assert (await c.get(f"/v1/jobs/{job_id}")).status_code == 404
        with pytest.raises(InvalidStatus) as denied:
            async with gw.ws("reader-p2", f"/v1/jobs/{job_id}/ws"):
                pass
        assert denied.value.response.status_code == 404
        assert (await read_sse_raw(gw, "reader-p2", job_id))[0] == 404
        # the limit is not "nothing": a job in p2 is seen
        async with gw.client("writer-p2") as w:
            r = await w.post("/v1/test-jobs", json={"steps": 1, "interval": 0.01}, params={"project": "p2",
                                                                                          "wait": 10})
        mine = r.json()
        assert r.status_code == 200 and mine["project"] == "p2", r.text
        listed = (await c.get("/v1/jobs")).json()["items"]
        assert mine["id"] in [j["id"] for j in listed] and {j["project"] for j in listed} == {"p2"}
        assert (await c.get(f"/v1/jobs/{mine['id']}")).status_code == 200


async def test_another_token_sees_the_job_but_not_its_params_or_output(gw: Gateway) -> None:
    async with gw.ws("reader", "/v1/jobs/ws") as other_all, gw.ws("admin", "/v1/jobs/ws") as admin_all:
        job = await start_exec(gw, "writer", {"command": PRINTING, "environment": {"TOKEN": CMD_MARKER}})
        job_id = job["id"]
        assert job["requested_by"] == "writer"
        async with gw.ws("reader", f"/v1/jobs/{job_id}/ws") as other_ws, \
                gw.ws("writer", f"/v1/jobs/{job_id}/ws") as owner_ws:
            other_sse, other_frames, owner_frames, other_all_frames, admin_all_frames = await asyncio.gather(
                read_sse_raw(gw, "reader", job_id), read_ws(other_ws), read_ws(owner_ws),
                read_ws(other_all, until_end_of=job_id), read_ws(admin_all, until_end_of=job_id))
    # the other token streamed the job (snapshot ... end) but never its command line or output
    for frames in (other_frames, other_all_frames):
        messages = [json.loads(f) for f in frames if json.loads(f)["job"]["id"] == job_id]
        assert messages and messages[-1]["type"] == "end" and messages[-1]["job"]["status"] == "succeeded"
        assert "output" not in {m["type"] for m in messages}
        assert messages[-1]["job"]["result"]["output_omitted"] is True
        assert messages[-1]["job"]["result"]["exit_code"] == 0
        assert not any(OUT_MARKER in f or CMD_MARKER in f for f in frames)
    status, raw, events = other_sse
    assert status == 200 and events[-1]["event"] == "end" and "output" not in {e["event"] for e in events}
    assert OUT_MARKER not in raw and CMD_MARKER not in raw
    # the starting token and an admin get the output messages
    for frames in (owner_frames, admin_all_frames):
        outputs = [json.loads(f) for f in frames if json.loads(f)["type"] == "output"]
        assert outputs and OUT_MARKER in "".join(m["data"]["text"] for m in outputs if m["job"]["id"] == job_id)
    assert OUT_MARKER in json.loads(owner_frames[-1])["job"]["result"]["stdout"]

    async with gw.client("reader") as c:
        r = await c.get(f"/v1/jobs/{job_id}")
        seen = r.json()
        assert r.status_code == 200 and seen["params"] is None
        assert seen["result"] == {"exit_code": 0, "truncated": False, "output_omitted": True}
        assert OUT_MARKER not in r.text and CMD_MARKER not in r.text
        listed = (await c.get("/v1/jobs", params={"kind": "container.exec"}))
        item = next(j for j in listed.json()["items"] if j["id"] == job_id)
        assert item["result"]["output_omitted"] is True and item["params"] is None
        assert OUT_MARKER not in listed.text and CMD_MARKER not in listed.text
        async with gw.ws("reader", f"/v1/jobs/{job_id}/ws") as ended:
            frames = await read_ws(ended)
        assert [json.loads(f)["type"] for f in frames] == ["snapshot", "end"]
        assert not any(OUT_MARKER in f for f in frames)
        status, raw, events = await read_sse_raw(gw, "reader", job_id)
        assert [e["event"] for e in events] == ["snapshot", "end"] and OUT_MARKER not in raw
    for who in ("writer", "admin"):
        async with gw.client(who) as c:
            full = (await c.get(f"/v1/jobs/{job_id}")).json()
        assert full["params"]["command"] == PRINTING and full["params"]["environment"] == {"TOKEN": CMD_MARKER}
        assert full["result"]["stdout"].splitlines() == [f"{OUT_MARKER}-{i}" for i in (1, 2, 3, 4)]
        assert "output_omitted" not in full["result"]
        async with gw.client(who) as c:
            listed = (await c.get("/v1/jobs", params={"kind": "container.exec"}))
        assert OUT_MARKER not in listed.text  # listings never carry output, not even to the owner


async def test_a_token_limited_to_another_project_cannot_cancel_an_admins_job(gw: Gateway) -> None:
    job = await start_exec(gw, "admin", {"command": ["sleep", "60"]})
    async with gw.client("admin") as admin, gw.client("writer-p2") as p2:
        async with asyncio.timeout(20):
            while (await admin.get(f"/v1/jobs/{job['id']}")).json()["status"] != "running":
                await asyncio.sleep(0.1)
        r = await p2.delete(f"/v1/jobs/{job['id']}", params={"wait": 5})
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM, r.text
        await asyncio.sleep(1)
        assert (await admin.get(f"/v1/jobs/{job['id']}")).json()["status"] == "running"  # the job goes on
        r = await admin.delete(f"/v1/jobs/{job['id']}", params={"wait": 30})
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text


async def test_a_listing_of_jobs_with_large_outputs_stays_small(gw: Gateway) -> None:
    mib = "head -c 1048576 /dev/zero | tr '\\0' x"
    big = [await start_exec(gw, "writer", {"command": ["sh", "-c", mib], "max_output_bytes": 64 << 20}, wait=60)
           for _ in range(3)]
    both = await start_exec(gw, "writer", {"command": ["sh", "-c", f"{mib}; {mib} >&2"],
                                           "max_output_bytes": 64 << 20}, wait=60)
    async with gw.client("writer") as c:
        r = await c.get("/v1/jobs", params={"kind": "container.exec", "limit": 1000})
        assert r.status_code == 200 and len(r.content) < 64 * 1024, len(r.content)
        items = {j["id"]: j for j in r.json()["items"]}
        for job in [*big, both]:
            listed = items[job["id"]]["result"]
            assert "stdout" not in listed and "stderr" not in listed and listed["output_omitted"] is True
            assert listed["truncated"] is True
        # the stored output is capped by the setting, although the request asked for 64 MiB per stream
        for job in big:
            full = (await c.get(f"/v1/jobs/{job['id']}")).json()["result"]
            assert full["stdout"] == "x" * CAP and full["truncated"] is True and full["exit_code"] == 0
        full = (await c.get(f"/v1/jobs/{both['id']}")).json()["result"]
        assert len(full["stdout"]) + len(full["stderr"]) == CAP and full["truncated"] is True
    db = sqlite3.connect(gw.app.state.settings.data_dir / "jobs.sqlite3")
    try:
        longest = db.execute("SELECT max(length(output)) FROM job_outputs").fetchone()[0]
    finally:
        db.close()
    assert CAP <= longest < CAP + 1024


async def test_an_ended_jobs_websocket_and_sse_send_snapshot_then_end(gw: Gateway) -> None:
    job = await start_exec(gw, "writer", {"command": ["echo", "hi"]}, wait=60)
    assert job["status"] == "succeeded"
    async with gw.ws("writer", f"/v1/jobs/{job['id']}/ws") as ws:
        frames = await read_ws(ws)
        assert ws.close_code == 1000
    messages = [json.loads(f) for f in frames]
    assert [m["type"] for m in messages] == ["snapshot", "end"]
    assert messages[0]["job"] == messages[1]["job"] and messages[1]["job"]["result"]["stdout"] == "hi\n"
    status, _, events = await read_sse_raw(gw, "writer", job["id"])
    assert status == 200 and [e["event"] for e in events] == ["snapshot", "end"]
    assert [e["id"] for e in events] == [messages[0]["seq"], messages[1]["seq"]]


async def test_a_new_token_with_a_revoked_tokens_name_neither_replays_nor_reads_its_jobs(gw: Gateway) -> None:
    tokens = gw.app.state.tokens
    _, first_secret = tokens.create("reused", [Scope.write])
    body = {"steps": 1, "interval": 0.01, "note": CMD_MARKER}
    key = {"Idempotency-Key": "reused-key"}
    async with httpx.AsyncClient(base_url=f"http://{gw.address}", timeout=30,
                                 headers={"Authorization": f"Bearer {first_secret}"}) as first:
        r = await first.post("/v1/test-jobs", json=body, headers=key, params={"wait": 10})
        old = r.json()
        assert r.status_code == 200 and old["status"] == "succeeded", r.text
        assert (await first.get(f"/v1/jobs/{old['id']}")).json()["params"] == body
    tokens.revoke("reused")
    _, second_secret = tokens.create("reused", [Scope.write])
    async with httpx.AsyncClient(base_url=f"http://{gw.address}", timeout=30,
                                 headers={"Authorization": f"Bearer {second_secret}"}) as second:
        r = await second.post("/v1/test-jobs", json=body, headers=key, params={"wait": 10})
        assert r.status_code == 200 and r.json()["id"] != old["id"], r.text
        assert "idempotent-replayed" not in r.headers
        r = await second.get(f"/v1/jobs/{old['id']}")
        assert r.status_code == 200 and r.json()["requested_by"] == "reused" and r.json()["params"] is None
        assert CMD_MARKER not in r.text


async def test_an_exec_that_asks_to_keep_no_output_keeps_none(gw: Gateway) -> None:
    job = await start_exec(gw, "writer", {"command": ["echo", "hi"], "max_output_bytes": 0}, wait=60)
    assert job["status"] == "succeeded", job
    assert job["result"] == {"exit_code": 0, "stdout": "", "stderr": "", "truncated": True}
