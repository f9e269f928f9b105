"""The gateway against the raw LXD socket and pylxd, on one private LXD daemon and one gateway process.

    .venv/bin/python -m bench.gateway [--rounds N]

Each figure is the median of N rounds; every round runs each contender once, in a rotating order, so drift in
the machine's load falls on all of them alike (client, gateway and LXD share the machine's cores). Measured:

1. one GET of an instance, per request (200 sequential requests a round): the gateway's
   `GET /v1/containers/{name}`, raw httpx on the socket (`GET /1.0/instances/{name}`, and with `?recursion=1`,
   which is what the gateway asks LXD for, since it returns the live state too), pylxd `instances.get`;
2. listing 30 (stopped) instances with their state (5 listings a round): the gateway's `GET /v1/containers`,
   raw `GET /1.0/instances?recursion=2`, pylxd `instances.all()` then `.state()` of each, as pylxd users do;
3. 20 concurrent create+start+delete of busybox containers: the gateway (20 concurrent
   `POST /v1/containers?wait=120`, then 20 concurrent `DELETE /v1/containers/{name}?wait=60`), raw httpx
   (asyncio, create, start, force-stop, delete, each waiting on its operation), pylxd from a pool of 20 threads
   with a `pylxd.Client` each (the same four calls with `wait=True`);
4. job-event latency: for create jobs started without `?wait`, the time from LXD's event saying the start
   operation succeeded (its own timestamp, from `/1.0/events`) to the job's `end` message on
   `/v1/jobs/{id}/ws`; it includes the gateway's read of the new container for the job's result;
5. the gateway's memory: RSS once warmed up, idle; peak RSS (VmHWM) after everything above and `bench/load.py`'s
   load: 1,000 concurrent reads (N rounds, the time is their median) and 200 websocket subscribers.

Everything stays on loopback and the daemon's unix socket; the daemon and gateway are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

from app.locallxd.daemon import LocalDaemon, ensure_installed, free_port, image_tarball
from bench import load
from bench._table import RAW, Row, machine, ms, ratio, render
from bench.client import Raw, interleaved, pylxd_cycle, threaded
from bench.jobs import raise_fd_limit
from tests.support.gateway import gateway_env, start_gateway

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
GETS = 200
LISTED = 30
LISTINGS = 5
CREATES = 20
EVENT_JOBS = 2  # per round
READS = 1000
SUBSCRIBERS = 200

M_GET = "one GET of an instance, per request"
M_LIST = f"list {LISTED} instances with state"
M_CYCLE = f"{CREATES} concurrent create+start+delete"
M_EVENT = "job-event latency, LXD start done -> job end on websocket"
M_MEM = "gateway memory (RSS)"
M_READS = "1,000 concurrent reads through the gateway"


def names(n: int, prefix: str = "g") -> list[str]:
    return [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(n)]


# ---------------------------------------------------------------------------------------------- gateway


class Gateway:
    """`python -m app` on a loopback port, in front of the daemon's socket, with no auth and no limits."""

    def __init__(self, sock: str) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="lxd-gateway-bench-"))
        env = gateway_env(sock, self.data, free_port(), LXDGW_RATE_LIMIT="", LXDGW_MAX_JOBS_PER_TOKEN="0",
                          LXDGW_LOG_LEVEL="WARNING")
        self.process = start_gateway(env, log=self.data / "gateway.log", ready_path="/readyz")
        self.proc = self.process.proc
        self.base, self.ws_base = self.process.base, self.process.ws_base

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.data, ignore_errors=True)


async def gw_cycle(http: httpx.AsyncClient, batch: list[str]) -> None:
    async def create(name: str) -> None:
        r = await http.post("/v1/containers", params={"wait": 120},
                            json={"name": name, "image": {"alias": "busybox"}})
        if r.status_code != 200 or r.json().get("status") != "succeeded":
            raise RuntimeError(f"gateway create {name}: {r.status_code} {r.text[:300]}")

    async def delete(name: str) -> None:
        r = await http.delete(f"/v1/containers/{name}", params={"wait": 60})
        if r.status_code != 200 or r.json().get("status") != "succeeded":
            raise RuntimeError(f"gateway delete {name}: {r.status_code} {r.text[:300]}")

    await asyncio.gather(*(create(n) for n in batch))
    await asyncio.gather(*(delete(n) for n in batch))


# ---------------------------------------------------------------------------------------------- raw and pylxd


# ---------------------------------------------------------------------------------------------- job events


def lxd_time_ns(stamp: str) -> int:
    """LXD's RFC 3339 timestamp (nanoseconds, `Z` or an offset) as ns since the epoch."""
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if m is None:
        raise ValueError(f"unexpected LXD timestamp {stamp!r}")
    whole = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    return int(whole.timestamp()) * 1_000_000_000 + int((m[2] or "0").ljust(9, "0")[:9])


async def event_latencies(sock: str, gw: Gateway, http: httpx.AsyncClient, jobs: int) -> list[float]:
    """Create jobs one after another; for each, LXD's `Success` event of the start operation to the job's `end`
    message on its websocket, in seconds."""
    started: dict[str, int] = {}
    seen = asyncio.Event()

    async def follow_lxd(ws: Any) -> None:
        async for raw in ws:
            ev = json.loads(raw)
            md = ev.get("metadata") or {}
            if md.get("status") != "Success" or not str(md.get("description", "")).startswith("Start"):
                continue
            for url in (md.get("resources") or {}).get("instances") or []:
                started.setdefault(url.rsplit("/", 1)[-1], lxd_time_ns(ev["timestamp"]))
                seen.set()

    out: list[float] = []
    async with websockets.unix_connect(sock, "ws://lxd/1.0/events?type=operation") as lxd_ws:
        follower = asyncio.create_task(follow_lxd(lxd_ws))
        try:
            for name in names(jobs, "e"):
                r = await http.post("/v1/containers", json={"name": name, "image": {"alias": "busybox"}})
                if r.status_code != 202:
                    raise RuntimeError(f"gateway create {name}: {r.status_code} {r.text[:300]}")
                ended = 0
                async with websockets.connect(f"{gw.ws_base}/v1/jobs/{r.json()['id']}/ws") as ws:
                    async with asyncio.timeout(120):
                        async for raw in ws:
                            msg = json.loads(raw)
                            if msg["type"] == "end":
                                ended = time.time_ns()
                                if msg["job"]["status"] != "succeeded":
                                    raise RuntimeError(f"create job for {name}: {msg['job']}")
                                break
                async with asyncio.timeout(10):
                    while name not in started:
                        seen.clear()
                        await seen.wait()
                out.append((ended - started[name]) / 1e9)
                d = await http.delete(f"/v1/containers/{name}", params={"wait": 60})
                if d.status_code != 200:
                    raise RuntimeError(f"gateway delete {name}: {d.status_code} {d.text[:300]}")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await follower
    return out


# ---------------------------------------------------------------------------------------------- run


async def measure(sock: str, gw: Gateway, rounds: int) -> list[Row]:
    import pylxd

    rows: list[Row] = []
    n = str(rounds)
    http = httpx.AsyncClient(base_url=gw.base, timeout=httpx.Timeout(180.0),
                             limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
    raw = Raw(sock)
    pyl = pylxd.Client(endpoint=sock)
    target = "bench-get"
    listed = [target, *(f"bench-l{i:02d}" for i in range(LISTED - 1))]
    try:
        for i in range(0, len(listed), 10):
            await asyncio.gather(*(raw._run("POST", "/1.0/instances", {
                "name": x, "source": {"type": "image", "alias": "busybox"}}) for x in listed[i:i + 10]))
        # warm-up: connections, the gateway's first LXD calls, pylxd's server facts
        for _ in range(5):
            (await http.get(f"/v1/containers/{target}")).raise_for_status()
            (await http.get("/v1/containers")).raise_for_status()
            await raw.get(target)
            pyl.instances.get(target)
        await asyncio.sleep(1.0)
        idle = load.rss_kib(gw.proc.pid)

        # 1. one GET
        async def gw_get() -> None:
            for _ in range(GETS):
                (await http.get(f"/v1/containers/{target}")).raise_for_status()

        async def raw_get(recursion: int) -> None:
            for _ in range(GETS):
                await raw.get(target, recursion)

        t = await interleaved(rounds, {
            "gateway": gw_get, RAW: lambda: raw_get(0), f"{RAW}, ?recursion=1": lambda: raw_get(1),
            "pylxd": threaded(lambda: [pyl.instances.get(target) for _ in range(GETS)])})
        rows += [Row(M_GET, k, ms(v / GETS, 2), ratio(v, t[RAW]), n) for k, v in t.items()]

        # 2. list with state
        body = (await http.get("/v1/containers")).json()
        assert len(body["items"]) == LISTED, f"the gateway lists {len(body['items'])} containers"

        async def gw_list() -> None:
            for _ in range(LISTINGS):
                (await http.get("/v1/containers")).raise_for_status()

        async def raw_list() -> None:
            for _ in range(LISTINGS):
                await raw.list_state()

        def pylxd_list() -> None:
            for _ in range(LISTINGS):
                for inst in pyl.instances.all():
                    inst.state()

        t = await interleaved(rounds, {"gateway": gw_list, RAW: raw_list,
                                       "pylxd, all() + state() each": threaded(pylxd_list)})
        rows += [Row(M_LIST, k, ms(v / LISTINGS, 1), ratio(v, t[RAW]), n) for k, v in t.items()]

        # 3. 20 concurrent create+start+delete
        # One pylxd.Client per thread: a shared one fails past 10 threads (its requests session's unix-socket
        # connection pool holds 10 connections and is not safe to overflow from many threads).
        clients = [pylxd.Client(endpoint=sock) for _ in range(CREATES)]

        def pylxd_threads() -> None:
            with ThreadPoolExecutor(CREATES) as pool:
                list(pool.map(pylxd_cycle, clients, names(CREATES, "p")))

        cycles: dict[str, Callable[[], Awaitable[Any]]] = {
            "gateway": lambda: gw_cycle(http, names(CREATES)),
            RAW: lambda: asyncio.gather(*(raw.cycle(x) for x in names(CREATES, "r"))),
            "pylxd, 20 threads": threaded(pylxd_threads)}
        t = await interleaved(rounds, cycles)
        rows += [Row(M_CYCLE, k, f"{v:.2f} s", ratio(v, t[RAW]), n) for k, v in t.items()]

        # 4. job-event latency on real create jobs
        lat = await event_latencies(sock, gw, http, EVENT_JOBS * rounds)
        rows.append(Row(M_EVENT, "gateway", ms(statistics.median(lat), 1), "", f"{len(lat)} jobs"))

        # 5. memory, with bench/load.py's load
        paths = [p for p in load.READ_PATHS if p in (await http.get("/openapi.json")).json()["paths"]
                 or p == "/readyz"]
        elapsed: list[float] = []
        for _ in range(rounds):
            _, failed, secs = await load.reads(gw.base, READS, paths)
            if failed:
                raise RuntimeError(f"{failed} of {READS} concurrent reads failed")
            elapsed.append(secs)
        _, ws_failed = await load.subscribers(gw.ws_base, SUBSCRIBERS, hold=2.0)
        if ws_failed:
            raise RuntimeError(f"{ws_failed} of {SUBSCRIBERS} websocket subscribers failed")
        peak = load.rss_kib(gw.proc.pid, "VmHWM")
        secs = statistics.median(elapsed)
        rows.append(Row(M_READS, "gateway", f"{secs:.2f} s ({READS / secs:.0f} req/s)", "", n))
        rows.append(Row(M_MEM, "idle", f"{idle / 1024:.0f} MiB", "", "1"))
        rows.append(Row(M_MEM, "peak under load", f"{peak / 1024:.0f} MiB", "", "1"))
    finally:
        await http.aclose()
        await raw.http.aclose()
    return rows


def collect(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv if argv is not None else [])
    raise_fd_limit()
    ensure_installed()
    daemon = LocalDaemon()
    gw: Gateway | None = None
    try:
        daemon.start()
        daemon.prepare(image_tarball=image_tarball(), https=False, bridge=False)
        gw = Gateway(str(daemon.socket_path))
        return asyncio.run(asyncio.wait_for(measure(str(daemon.socket_path), gw, args.rounds), 420))
    finally:
        if gw is not None:
            gw.stop()
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    try:
        import pylxd  # noqa: F401
    except ImportError:
        print("bench/gateway.py compares with pylxd: install it with `.venv/bin/pip install -e '.[bench]'`",
              file=sys.stderr)
        return 1
    rows = collect(argv)
    print(f"Measured {machine()}.")
    print(render(rows, strict=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
