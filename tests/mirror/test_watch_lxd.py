"""`GET /v1/containers?watch=true` on the real private LXD: the first event is the full list, then every change
made through the gateway or behind its back, each with an id that `Last-Event-ID` resumes from; a resume older
than what is kept answers a `resync` with the full list."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from tests.containers.support import create, remove_all, unique
from tests.support.gateway import serving


@pytest.fixture
async def names(lxd_daemon: DaemonInfo) -> AsyncIterator[str]:
    prefix = unique("twa")
    yield prefix
    await remove_all(lxd_daemon.socket_path, prefix)


class Events:
    """An SSE stream read in the background, its events parsed into (event, id, data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.queue: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(response))

    async def _read(self, response: httpx.Response) -> None:
        event, ident, data = "", 0, ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event:
                await self.queue.put((event, ident, json.loads(data)))
                event, ident, data = "", 0, ""

    async def next(self, timeout: float = 10.0) -> tuple[str, int, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, pred: Any, timeout: float = 10.0) -> tuple[str, int, Any]:
        """The first event `pred` accepts (earlier ones are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.queue.get()
                if pred(ev):
                    return ev

    def close(self) -> None:
        self._task.cancel()


@pytest.fixture
async def base(app: FastAPI) -> AsyncIterator[str]:
    async with serving(app) as address:
        yield f"http://{address}"


async def _watch(c: httpx.AsyncClient, prefix: str, last: int | None = None) -> tuple[httpx.Response, Events]:
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    req = c.build_request("GET", "/v1/containers", params={"watch": "true", "prefix": prefix}, headers=headers)
    r = await c.send(req, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    return r, Events(r)


async def test_watch_streams_the_list_then_changes_and_resumes(base: str, names: str,
                                                               lxd_daemon: DaemonInfo) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        r, events = await _watch(c, names)
        try:
            kind, first_id, data = await events.next()
            assert kind == "resync" and data == {"items": []}

            name = f"{names}-a"
            await create(c, name, start=False)
            kind, added_id, data = await events.until(lambda e: e[0] == "added")
            assert data["name"] == name and data["status"] == "Stopped" and added_id > first_id

            # behind the gateway's back
            env = {"LXD_DIR": str(Path(lxd_daemon.socket_path).parent), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
            await asyncio.to_thread(subprocess.run, ["lxc", "config", "set", name, "user.watched=yes"], env=env,
                                    check=True, capture_output=True)
            kind, mod_id, data = await events.until(
                lambda e: e[0] == "modified" and e[2]["config"].get("user.watched") == "yes")
            assert data["metadata"]["watched"] == "yes" and mod_id > added_id

            assert (await c.delete(f"/v1/containers/{name}", params={"wait": 60})).json()["status"] == "succeeded"
            kind, del_id, data = await events.until(lambda e: e[0] == "deleted")
            assert data["name"] == name and del_id > mod_id
        finally:
            events.close()
            await r.aclose()

        # resume after the `added` event: the changes after it are replayed in order, no resync
        r, events = await _watch(c, names, last=added_id)
        try:
            seen = [await events.next()]
            while seen[-1][1] < del_id:
                seen.append(await events.next())
            assert seen[0][0] != "resync"
            assert [e[1] for e in seen] == sorted(e[1] for e in seen) and all(e[1] > added_id for e in seen)
            assert seen[-1][0] == "deleted" and any(e[0] == "modified" for e in seen)
        finally:
            events.close()
            await r.aclose()

        # a resume older than anything kept (an id of an earlier gateway process): the full list again
        r, events = await _watch(c, names, last=1)
        try:
            kind, _, data = await events.next()
            assert kind == "resync" and data == {"items": []}
        finally:
            events.close()
            await r.aclose()


async def test_watch_rejects_a_malformed_last_event_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/containers", params={"watch": "true"}, headers={"Last-Event-ID": "x"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
