"""The gateway against the raw LXD socket and pylxd, on one private LXD daemon and one gateway process.

    .venv/bin/python -m bench.gateway [--rounds N] [--only get,list,create,event,memory]

Each figure is the median of N rounds (5 unless told); every round runs each contender once, in a rotating order,
so drift in the machine's load falls on all of them alike (client, gateway and LXD share the machine's cores).
`BENCH_LXDGW_<SETTING>=...` in the environment hands the gateway under test `LXDGW_<SETTING>` (to compare
settings). Measured:

1. one GET of an instance, per request (200 sequential requests a round): the gateway's
   `GET /v1/containers/{name}`, raw httpx on the socket (`GET /1.0/instances/{name}`, and with `?recursion=1`,
   which is what the gateway asks LXD for, since it returns the live state too), pylxd `instances.get`;
2. listing 30 (stopped) instances with their state (5 listings a round): the gateway's `GET /v1/containers`,
   raw `GET /1.0/instances?recursion=2`, pylxd `instances.all()` then `.state()` of each, as pylxd users do;
3. 20 concurrent create+start of busybox containers (from the local alias `busybox`), then 20 concurrent
   force-stop+delete of them, each phase timed on its own: the clock starts before the first request of the phase
   and stops when the last of the 20 has ended. The gateway: 20 concurrent `POST /v1/containers?wait=120` (each a
   `container.create` job: image lookup, create, start, a read of the container for the job's result; the answer
   comes once the job has ended), then 20 concurrent `DELETE /v1/containers/{name}?wait=60`. Raw httpx (asyncio):
   create, then start, each waiting on its operation; then force-stop, then delete. pylxd from a pool of 20
   threads with a `pylxd.Client` each: the same calls with `wait=True`. The median is over the N rounds;
4. job end latency, p50 and p99 over 30 create jobs and 30 delete jobs run one after another, whatever N (with 30
   values the p99 lies between the two largest, so it reads as "the worst but one"): the clock starts at
   the timestamp of LXD's own `operation` event saying the job's last operation ended (a final status; read from
   `/1.0/events`, same machine clock) and stops when the job's `end` message arrives on `/v1/jobs/{id}/ws`. Create
   jobs (started without `?wait`; last operation: the start) include the gateway's read of the new container for
   the job's result (`GET /1.0/instances/{name}?recursion=1`, LXD's live state of a container that has just
   started); delete jobs (last operation: the delete) read nothing after it: the job engine's own path;
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
from bench._table import RAW, Row, ms, ratio, report
from bench.client import Raw, interleaved, threaded
from bench.jobs import raise_fd_limit
from tests.support.gateway import gateway_env, start_gateway

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
GETS = 200
LISTED = 30
LISTINGS = 5
CREATES = 20
EVENT_JOBS = 30
READS = 1000
SUBSCRIBERS = 200

M_GET = "one GET of an instance, per request"
M_LIST = f"list {LISTED} instances with state"
M_CREATE = f"{CREATES} concurrent create+start"
M_DELETE = f"{CREATES} concurrent force-stop+delete"
M_EVENT = "job end latency, LXD operation done -> job end on websocket, p50 / p99"
EVENT_CREATE = "gateway, create job (reads the container)"
EVENT_DELETE = "gateway, delete job (reads nothing)"
M_MEM = "gateway memory (RSS)"
M_READS = "1,000 concurrent reads through the gateway"


def names(n: int, prefix: str = "g") -> list[str]:
    return [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(n)]


# ---------------------------------------------------------------------------------------------- gateway


def extra_env() -> dict[str, str]:
    import os
    return {k[6:]: v for k, v in os.environ.items() if k.startswith("BENCH_LXDGW_")}


class Gateway:
    """`python -m app` on a loopback port, in front of the daemon's socket, with no auth and no limits."""

    def __init__(self, sock: str) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="lxd-gateway-bench-"))
        env = gateway_env(sock, self.data, free_port(), LXDGW_RATE_LIMIT="", LXDGW_MAX_JOBS_PER_TOKEN="0",
                          LXDGW_LOG_LEVEL="WARNING", **extra_env())
        self.process = start_gateway(env, log=self.data / "gateway.log", ready_path="/readyz")
        self.proc = self.process.proc
        self.base, self.ws_base = self.process.base, self.process.ws_base

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.data, ignore_errors=True)


async def gw_create(http: httpx.AsyncClient, batch: list[str]) -> None:
    async def create(name: str) -> None:
        r = await http.post("/v1/containers", params={"wait": 120},
                            json={"name": name, "image": {"alias": "busybox"}})
        if r.status_code != 200 or r.json().get("status") != "succeeded":
            raise RuntimeError(f"gateway create {name}: {r.status_code} {r.text[:300]}")

    await asyncio.gather(*(create(n) for n in batch))


async def gw_delete(http: httpx.AsyncClient, batch: list[str]) -> None:
    async def delete(name: str) -> None:
        r = await http.delete(f"/v1/containers/{name}", params={"wait": 60})
        if r.status_code != 200 or r.json().get("status") != "succeeded":
            raise RuntimeError(f"gateway delete {name}: {r.status_code} {r.text[:300]}")

    await asyncio.gather(*(delete(n) for n in batch))


# ---------------------------------------------------------------------------------------------- raw and pylxd


async def raw_create(raw: Raw, batch: list[str]) -> None:
    async def create(name: str) -> None:
        await raw._run("POST", "/1.0/instances", {"name": name, "source": {"type": "image", "alias": "busybox"}})
        await raw._run("PUT", f"/1.0/instances/{name}/state", {"action": "start"})

    await asyncio.gather(*(create(n) for n in batch))


async def raw_delete(raw: Raw, batch: list[str]) -> None:
    async def delete(name: str) -> None:
        await raw._run("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True})
        await raw._run("DELETE", f"/1.0/instances/{name}")

    await asyncio.gather(*(delete(n) for n in batch))


class PylxdThreads:
    """pylxd from a pool of threads with a `pylxd.Client` each: a shared one fails past 10 threads (its requests
    session's unix-socket connection pool holds 10 connections and is not safe to overflow from many threads)."""

    def __init__(self, sock: str, width: int) -> None:
        import pylxd

        self.clients = [pylxd.Client(endpoint=sock) for _ in range(width)]
        self.made: dict[str, Any] = {}

    def create(self, batch: list[str]) -> None:
        def one(client: Any, name: str) -> None:
            inst = client.instances.create({"name": name, "source": {"type": "image", "alias": "busybox"}},
                                           wait=True)
            inst.start(wait=True)
            self.made[name] = inst

        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(one, self.clients, batch))

    def delete(self, batch: list[str]) -> None:
        def one(name: str) -> None:
            inst = self.made.pop(name)
            inst.stop(force=True, wait=True)
            inst.delete(wait=True)

        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(one, batch))


# ---------------------------------------------------------------------------------------------- job events


def lxd_time_ns(stamp: str) -> int:
    """LXD's RFC 3339 timestamp (nanoseconds, `Z` or an offset) as ns since the epoch."""
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if m is None:
        raise ValueError(f"unexpected LXD timestamp {stamp!r}")
    whole = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    return int(whole.timestamp()) * 1_000_000_000 + int((m[2] or "0").ljust(9, "0")[:9])


FINAL = {"Success", "Failure", "Cancelled"}


class LxdOperations:
    """LXD's `operation` events as they come: when each instance's last operation of a kind ended (LXD's time)."""

    def __init__(self, ws: Any) -> None:
        self.ended: dict[tuple[str, str], int] = {}
        self.seen = asyncio.Event()
        self.task = asyncio.create_task(self._follow(ws))

    async def _follow(self, ws: Any) -> None:
        async for raw in ws:
            ev = json.loads(raw)
            md = ev.get("metadata") or {}
            if md.get("status") not in FINAL:
                continue
            what = str(md.get("description", "")).split(" ", 1)[0]  # "Starting", "Deleting", ...
            for url in (md.get("resources") or {}).get("instances") or []:
                self.ended[(what, url.rsplit("/", 1)[-1].split("?", 1)[0])] = lxd_time_ns(ev["timestamp"])
                self.seen.set()

    async def when(self, what: str, name: str) -> int:
        async with asyncio.timeout(10):
            while (what, name) not in self.ended:
                self.seen.clear()
                await self.seen.wait()
        return self.ended[(what, name)]

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await self.task


async def job_end(gw: Gateway, job_id: str, what: str) -> int:
    """When the job's `end` message arrived on its websocket (it must have succeeded)."""
    async with websockets.connect(f"{gw.ws_base}/v1/jobs/{job_id}/ws") as ws:
        async with asyncio.timeout(120):
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "end":
                    ended = time.time_ns()
                    if msg["job"]["status"] != "succeeded":
                        raise RuntimeError(f"{what} job {job_id}: {msg['job']}")
                    return ended
    raise RuntimeError(f"{what} job {job_id}: no end message")


async def event_latencies(sock: str, gw: Gateway, http: httpx.AsyncClient, jobs: int) -> dict[str, list[float]]:
    """Create jobs, then delete jobs, one after another; for each, LXD's event saying its last operation ended
    (start, delete) to the job's `end` message on its websocket, in seconds."""
    out: dict[str, list[float]] = {"create": [], "delete": []}
    async with websockets.unix_connect(sock, "ws://lxd/1.0/events?type=operation") as lxd_ws:
        lxd = LxdOperations(lxd_ws)
        try:
            for name in names(jobs, "e"):
                r = await http.post("/v1/containers", json={"name": name, "image": {"alias": "busybox"}})
                if r.status_code != 202:
                    raise RuntimeError(f"gateway create {name}: {r.status_code} {r.text[:300]}")
                ended = await job_end(gw, r.json()["id"], "create")
                out["create"].append((ended - await lxd.when("Starting", name)) / 1e9)
                d = await http.delete(f"/v1/containers/{name}")
                if d.status_code != 202:
                    raise RuntimeError(f"gateway delete {name}: {d.status_code} {d.text[:300]}")
                ended = await job_end(gw, d.json()["id"], "delete")
                out["delete"].append((ended - await lxd.when("Deleting", name)) / 1e9)
        finally:
            await lxd.aclose()
    return out


def p99(values: list[float]) -> float:
    """The 99th percentile (linear between the closest ranks; with few values, close to the largest)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


# ---------------------------------------------------------------------------------------------- run


PARTS = ("get", "list", "create", "event", "memory")


async def measure(sock: str, gw: Gateway, rounds: int, parts: tuple[str, ...] = PARTS) -> list[Row]:
    import pylxd

    rows: list[Row] = []
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

        if "get" in parts:
            rows += await get_rows(http, raw, pyl, target, rounds)
        if "list" in parts:
            rows += await list_rows(http, raw, pyl, rounds)
        if "create" in parts:
            rows += await create_rows(sock, http, raw, rounds)
        if "event" in parts:
            rows += await event_rows(sock, gw, http)
        if "memory" in parts:
            rows += await memory_rows(gw, http, rounds, idle)
    finally:
        await http.aclose()
        await raw.http.aclose()
    return rows


async def get_rows(http: httpx.AsyncClient, raw: Raw, pyl: Any, target: str, rounds: int) -> list[Row]:
    """1. one GET of an instance."""

    async def gw_get() -> None:
        for _ in range(GETS):
            (await http.get(f"/v1/containers/{target}")).raise_for_status()

    async def raw_get(recursion: int) -> None:
        for _ in range(GETS):
            await raw.get(target, recursion)

    t = await interleaved(rounds, {
        "gateway": gw_get, RAW: lambda: raw_get(0), f"{RAW}, ?recursion=1": lambda: raw_get(1),
        "pylxd": threaded(lambda: [pyl.instances.get(target) for _ in range(GETS)])})
    return [Row(M_GET, k, ms(v / GETS, 2), ratio(v, t[RAW]), str(rounds)) for k, v in t.items()]


async def list_rows(http: httpx.AsyncClient, raw: Raw, pyl: Any, rounds: int) -> list[Row]:
    """2. list with state."""
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
    return [Row(M_LIST, k, ms(v / LISTINGS, 1), ratio(v, t[RAW]), str(rounds)) for k, v in t.items()]


async def create_rows(sock: str, http: httpx.AsyncClient, raw: Raw, rounds: int) -> list[Row]:
    """3. 20 concurrent create+start, then 20 concurrent force-stop+delete, each phase timed on its own: the clock
    starts before the first request of the phase and stops when the last of the 20 has ended."""
    pyl = PylxdThreads(sock, CREATES)
    phases: dict[str, tuple[Callable[[list[str]], Awaitable[Any]], Callable[[list[str]], Awaitable[Any]]]] = {
        "gateway": (lambda b: gw_create(http, b), lambda b: gw_delete(http, b)),
        RAW: (lambda b: raw_create(raw, b), lambda b: raw_delete(raw, b)),
        "pylxd, 20 threads": (lambda b: asyncio.to_thread(pyl.create, b),
                              lambda b: asyncio.to_thread(pyl.delete, b)),
    }
    made: dict[str, list[float]] = {k: [] for k in phases}
    removed: dict[str, list[float]] = {k: [] for k in phases}
    keys = list(phases)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            create, delete = phases[k]
            batch = names(CREATES, k[0])
            t0 = time.perf_counter()
            await create(batch)
            t1 = time.perf_counter()
            await delete(batch)
            made[k].append(t1 - t0)
            removed[k].append(time.perf_counter() - t1)
    rows: list[Row] = []
    for measure, times in ((M_CREATE, made), (M_DELETE, removed)):
        med = {k: statistics.median(v) for k, v in times.items()}
        rows += [Row(measure, k, f"{v:.2f} s", ratio(v, med[RAW]), str(rounds)) for k, v in med.items()]
    return rows


async def event_rows(sock: str, gw: Gateway, http: httpx.AsyncClient) -> list[Row]:
    """4. job end latency of real create and delete jobs."""
    lat = await event_latencies(sock, gw, http, EVENT_JOBS)
    return [Row(M_EVENT, via, f"{statistics.median(v) * 1000:.1f} / {p99(v) * 1000:.1f} ms", "", f"{len(v)} jobs")
            for via, v in ((EVENT_CREATE, lat["create"]), (EVENT_DELETE, lat["delete"]))]


async def memory_rows(gw: Gateway, http: httpx.AsyncClient, rounds: int, idle: int) -> list[Row]:
    """5. memory, with bench/load.py's load."""
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
    return [Row(M_READS, "gateway", f"{secs:.2f} s ({READS / secs:.0f} req/s)", "", str(rounds)),
            Row(M_MEM, "idle", f"{idle / 1024:.0f} MiB", "", "1"),
            Row(M_MEM, "peak under load", f"{peak / 1024:.0f} MiB", "", "1")]


def collect(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to measure, of {', '.join(PARTS)} (default: all)")
    args = parser.parse_args(argv if argv is not None else [])
    parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown parts: {', '.join(unknown)}")
    raise_fd_limit()
    ensure_installed()
    daemon = LocalDaemon()
    gw: Gateway | None = None
    try:
        daemon.start()
        daemon.prepare(image_tarball=image_tarball(), https=False, bridge=False)
        gw = Gateway(str(daemon.socket_path))
        return asyncio.run(asyncio.wait_for(measure(str(daemon.socket_path), gw, args.rounds, parts), 600))
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
    return report(collect(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

