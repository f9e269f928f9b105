"""Two gateways (two apps in this process, each with its own data directory) on one PostgreSQL database, in front of
the real private LXD, keep the hardening guarantees together: a name being created through one is refused by the
other (one 202, one 409 when both are asked at once); a token's cap of unfinished jobs holds across both; a token
revoked through one ends its open event stream and websocket on the other within a second, and its tickets die
with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import websockets
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings
from tests.support.gateway import serving

EXTENSIONS = ["tests.jobs.extension_sleep", "tests.http.extension_named"]
MARGIN = 3.0
"""What the assertions allow for a revocation to end a stream on the other gateway; the goal is one second (the
measured figures are printed)."""
LONG = {"steps": 600, "interval": 0.1}


@asynccontextmanager
async def gateways(tmp_path: Path, daemon: DaemonInfo, url: str,
                   **overrides: object) -> AsyncIterator[list[tuple[FastAPI, httpx.AsyncClient]]]:
    async with AsyncExitStack() as stack:
        out = []
        for name in ("a", "b"):
            app = create_app(make_settings(tmp_path / name, daemon, database_url=url, rate_limit="",
                                           extensions=EXTENSIONS, shutdown_grace_seconds=0, **overrides))
            await stack.enter_async_context(LifespanManager(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=30))
            out.append((app, client))
        yield out


async def test_one_name_asked_of_two_replicas_at_once_is_made_once(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                                   postgres_url: str) -> None:
    async with gateways(tmp_path, lxd_daemon, postgres_url) as [(_, a), (_, b)]:
        for attempt in range(5):
            name = f"web{attempt}"
            first, second = await asyncio.gather(a.post(f"/v1/test-named/{name}", json=LONG),
                                                 b.post(f"/v1/test-named/{name}", json=LONG))
            assert sorted([first.status_code, second.status_code]) == [202, 409], (first.text, second.text)
            won, lost = (first, second) if first.status_code == 202 else (second, first)
            assert lost.json()["type"].endswith("container-exists")
            job_id = won.json()["id"]
            assert lost.json().get("job_id") in (job_id, None)
            # while the job runs, on either replica, the name stays taken
            assert (await b.post(f"/v1/test-named/{name}", json=LONG)).status_code == 409
            assert (await a.post(f"/v1/test-named/{name}", json=LONG)).status_code == 409
            assert (await b.delete(f"/v1/jobs/{job_id}")).status_code in (200, 202)
            deadline = time.monotonic() + 15
            while (await a.get(f"/v1/jobs/{job_id}")).json()["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            # the job ended: the name is free again, on the other replica too
            again = await (b if won is first else a).post(f"/v1/test-named/{name}", json={"steps": 1})
            assert again.status_code == 202, again.text


async def test_the_job_cap_of_a_token_holds_across_replicas(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                            postgres_url: str) -> None:
    cap = 4
    async with gateways(tmp_path, lxd_daemon, postgres_url, max_jobs_per_token=cap) as [(_, a), (_, b)]:
        answers = await asyncio.gather(*(c.post("/v1/test-jobs", json=LONG) for _ in range(12) for c in (a, b)))
        codes = [r.status_code for r in answers]
        assert codes.count(202) == cap and codes.count(429) == len(codes) - cap, codes
        assert all(r.json()["type"].endswith("too-many-jobs") for r in answers if r.status_code == 429)
        with psycopg.connect(postgres_url) as conn:
            unfinished = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()
        assert unfinished is not None and unfinished[0] == cap
        one = next(r.json()["id"] for r in answers if r.status_code == 202)
        assert (await a.delete(f"/v1/jobs/{one}")).status_code in (200, 202)
        deadline = time.monotonic() + 15
        while (r := await b.post("/v1/test-jobs", json={"steps": 1})).status_code == 429:
            assert time.monotonic() < deadline, "a place under the cap was not freed when a job ended"
            await asyncio.sleep(0.05)
        assert r.status_code == 202, r.text


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_token_revoked_through_one_replica_ends_its_streams_on_the_other(
        tmp_path: Path, lxd_daemon: DaemonInfo, postgres_url: str) -> None:
    async with gateways(tmp_path, lxd_daemon, postgres_url, auth_enabled=True) as [(app_a, a), (app_b, b)]:
        _, root = app_a.state.tokens.create("root", [Scope.admin])
        created = await a.post("/v1/tokens", json={"name": "ci", "scopes": ["write"]}, headers=_bearer(root))
        assert created.status_code == 201, created.text
        ci = created.json()["token"]
        deadline = time.monotonic() + MARGIN
        while (await b.get("/v1/whoami", headers=_bearer(ci))).status_code != 200:
            assert time.monotonic() < deadline, "b does not know the new token"
            await asyncio.sleep(0.01)
        job = await a.post("/v1/test-jobs", json=LONG, headers=_bearer(ci))
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        once = (await a.post("/v1/tickets", headers=_bearer(ci))).json()["ticket"]
        kept = (await a.post("/v1/tickets", headers=_bearer(ci))).json()["ticket"]
        async with serving(app_b) as host, httpx.AsyncClient(timeout=30) as c:
            opened, sse_ended = asyncio.Event(), asyncio.Event()

            async def sse() -> None:
                async with c.stream("GET", f"http://{host}/v1/jobs/{job_id}/events", params={"ticket": once}) as r:
                    assert r.status_code == 200, await r.aread()
                    async for line in r.aiter_lines():
                        if line.startswith("event: "):
                            opened.set()
                sse_ended.set()

            reader = asyncio.create_task(sse())
            await asyncio.wait_for(opened.wait(), 10)  # a ticket issued by a opens a stream on b ...
            again = await c.get(f"http://{host}/v1/jobs/{job_id}/events", params={"ticket": once})
            assert again.status_code == 401  # ... once
            ws = await websockets.connect(f"ws://{host}/v1/jobs/ws", additional_headers=_bearer(ci))
            ws_closed: asyncio.Future[tuple[float, int | None, str]] = asyncio.get_running_loop().create_future()

            async def watch_ws() -> None:
                try:
                    async for _ in ws:
                        pass
                except ConnectionClosed:
                    pass
                ws_closed.set_result((time.monotonic(), ws.close_code, ws.close_reason or ""))

            watcher = asyncio.create_task(watch_ws())
            await asyncio.sleep(0.2)
            since = time.monotonic()
            assert (await a.delete("/v1/tokens/ci", headers=_bearer(root))).status_code == 204
            await asyncio.wait_for(sse_ended.wait(), MARGIN)
            sse_after = time.monotonic() - since
            at, code, reason = await asyncio.wait_for(ws_closed, MARGIN)
            ws_after = at - since
            await reader
            await watcher
            print(f"revoked through a: b ended its event stream after {sse_after:.3f}s and its websocket after "
                  f"{ws_after:.3f}s (goal: 1 s)")
            assert sse_after < MARGIN and ws_after < MARGIN
            assert code == 1008 and reason == "token revoked"
            # a ticket issued before the revocation opens nothing, on either replica
            for base in (f"http://{host}", None):
                if base is None:
                    refused = await a.get(f"/v1/jobs/{job_id}/events", params={"ticket": kept})
                else:
                    refused = await c.get(f"{base}/v1/jobs/{job_id}/events", params={"ticket": kept})
                assert refused.status_code == 401, refused.text
        assert (await a.delete(f"/v1/jobs/{job_id}", headers=_bearer(root))).status_code in (200, 202)
