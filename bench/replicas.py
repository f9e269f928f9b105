"""Reads and jobs through 1 and through 3 gateway replicas sharing one PostgreSQL job database, on one LXD.

    .venv/bin/python -m bench.replicas [--rounds N]

One private LXD daemon (`dir` pool, busybox image, a default profile without a NIC), one private PostgreSQL
(`tests/support/postgres.py`'s server: unix socket, fsync off) with one database, and gateway processes
(`python -m app`, no auth, no rate limit) all on `LXDGW_DATABASE_URL` of that database. First one replica runs and
is measured, then two more are started and the three are measured; every request is sent to the replicas in turn
(round robin: connection i goes to replica i mod n), as a balancer in front of them would. Measured:

1. **Reads, req/s.** The load generator of bench/reads.py (raw asyncio, httptools, pre-built keep-alive requests,
   one request in flight per connection) over `CONNECTIONS` (48) connections spread over the replicas, `READS`
   (3,000) requests a round or as many as were sent in `READ_SECONDS` (5 s); req/s = requests answered 200 / time
   from the first request written to the last answer parsed (answers 503, a replica's job database connections all
   busy past its wait, are counted apart and named in the rounds column; any other failure stops the run).
   Two reads, each its own row: `GET /v1/containers/{name}` (answered from each replica's read model, synced from
   LXD's events) and `GET /v1/jobs?limit=20` (a page of the job history: a query on PostgreSQL). Median of
   `--rounds` (5) rounds.
2. **Jobs per minute.** `JOBS` (12) busybox containers created at once (`POST /v1/containers?wait=120`: a
   `container.create` job each: create, start, read), then deleted at once (`DELETE /v1/containers/{name}?wait=120`:
   force-stop and delete), the requests spread round robin; jobs/min = 2 x `JOBS` / (time of the creates + time of
   the deletes) x 60. Median of `JOB_ROUNDS` (3) rounds. They run before the reads, so the job history read in 1.
   is not empty.

The client, the replicas, PostgreSQL and LXD share the machine's cores: on a small machine three replicas compete
with the rest for the same CPUs, and the figures say what that gives, not what more cores would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.locallxd.daemon import ensure_installed, free_port
from bench._table import Row, report
from bench.client import Raw
from bench.jobs import raise_fd_limit
from bench.reads import CacheTally, Connect, LoadResult, load, prepared_daemon, rounds_argument
from tests.support.gateway import GatewayProcess, gateway_env, start_gateway
from tests.support.postgres import private_postgres

ROUNDS = 5
CONNECTIONS = 48
READS = 3000
READ_SECONDS = 5.0
JOBS = 12
JOB_ROUNDS = 3
REPLICAS = 3
TARGET = "bench-replicas-get"
JOBS_PAGE = "/v1/jobs?limit=20"

M_GET = f"GET one container through replicas on one PostgreSQL, {CONNECTIONS} connections, req/s"
M_JOBS_LIST = f"list jobs (?limit=20) through replicas on one PostgreSQL, {CONNECTIONS} connections, req/s"
M_JOBS = f"busybox create+delete jobs per minute through replicas, {JOBS} at once"
V_ONE = "1 replica"
V_THREE = "3 replicas, round robin"


def log(msg: str) -> None:
    print(f"   [bench.replicas] {msg}", file=sys.stderr, flush=True)


def round_robin(ports: list[int]) -> Connect:
    """A `Connect` for bench.reads.load whose successive connections go to the ports in turn."""
    turn = itertools.cycle(ports)
    return lambda factory: asyncio.get_running_loop().create_connection(factory, "127.0.0.1", next(turn))


def answered(result: LoadResult) -> float:
    """Requests answered 200 per second (a replica whose job database is too busy answers 503 `store-unavailable`:
    counted apart, not in the rate)."""
    return result.statuses[200] / result.seconds if result.seconds > 0 else 0.0


def per_minute(jobs: int, seconds: float) -> float:
    return jobs / seconds * 60 if seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- set-up


class Replicas:
    """Gateway processes on one database, started one by one; all stopped at the end."""

    def __init__(self, sock: str, database_url: str) -> None:
        self.sock, self.database_url = sock, database_url
        self.root = Path(tempfile.mkdtemp(prefix="lxd-gateway-bench-replicas-"))
        self.started: list[GatewayProcess] = []

    def add(self) -> GatewayProcess:
        data = self.root / f"r{len(self.started) + 1}"
        env = gateway_env(self.sock, data, free_port(), LXDGW_DATABASE_URL=self.database_url, LXDGW_RATE_LIMIT="",
                          LXDGW_MAX_JOBS_PER_TOKEN="0", LXDGW_LOG_LEVEL="WARNING")
        gateway = start_gateway(env, log=data / "gateway.log", ready_path="/readyz", timeout=60)
        self.started.append(gateway)
        return gateway

    def stop(self) -> None:
        for gateway in self.started:
            gateway.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A database on a private PostgreSQL for the run; the server is removed at the end."""
    with private_postgres() as server:
        server.psql("CREATE DATABASE bench TEMPLATE template0")
        yield server.url("bench")


async def wait_synced(gateways: list[GatewayProcess], timeout: float = 60) -> None:
    """Until every replica's read model of the remote is synced (its container reads are answered from it)."""
    async with httpx.AsyncClient(timeout=10) as http, asyncio.timeout(timeout):
        for gateway in gateways:
            while True:
                remotes = (await http.get(f"{gateway.base}/readyz")).json().get("remotes", [])
                if remotes and all(r.get("model") == "synced" for r in remotes):
                    break
                await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------------------- measures


async def jobs_round(gateways: list[GatewayProcess]) -> tuple[float, float]:
    """Seconds of `JOBS` creates at once, then of their deletes at once, spread over the replicas in turn."""
    names = [f"bj-{uuid.uuid4().hex[:10]}" for _ in range(JOBS)]
    bases = [gateways[i % len(gateways)].base for i in range(JOBS)]
    async with httpx.AsyncClient(timeout=httpx.Timeout(180.0),
                                 limits=httpx.Limits(max_connections=JOBS * 2)) as http:
        async def create(base: str, name: str) -> None:
            r = await http.post(f"{base}/v1/containers", params={"wait": 120},
                                json={"name": name, "image": {"alias": "busybox"}})
            if r.status_code != 200 or r.json().get("status") != "succeeded":
                raise RuntimeError(f"create {name} on {base}: {r.status_code} {r.text[:300]}")

        async def delete(base: str, name: str) -> None:
            r = await http.delete(f"{base}/v1/containers/{name}", params={"wait": 120})
            if r.status_code != 200 or r.json().get("status") != "succeeded":
                raise RuntimeError(f"delete {name} on {base}: {r.status_code} {r.text[:300]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(create(b, n) for b, n in zip(bases, names, strict=True)))
        t1 = time.perf_counter()
        # deleted on another replica than the one that created it
        await asyncio.gather(*(delete(b, n) for b, n in zip(bases[1:] + bases[:1], names, strict=True)))
        return t1 - t0, time.perf_counter() - t1


async def reads(gateways: list[GatewayProcess], path: str, rounds: int, tally: CacheTally) -> list[LoadResult]:
    ports = [g.port for g in gateways]
    out: list[LoadResult] = []
    for _ in range(rounds):
        res = await load(round_robin(ports), path, connections=CONNECTIONS, total=READS, seconds=READ_SECONDS)
        if set(res.statuses) - {200, 503} or res.errors:
            raise RuntimeError(f"{path} through {len(ports)} replicas: {res.failed} of {res.requests} failed, "
                               f"{dict(res.statuses)} {dict(res.errors)}")
        tally.merge(res.cache)
        out.append(res)
        if res.statuses[503]:
            example = await refusal(gateways, path)
            log(f"{len(ports)} replica(s): {path}: {res.statuses[503]:,} answered 503, e.g. {example}")
    return out


async def refusal(gateways: list[GatewayProcess], path: str) -> str:
    """The detail of a 503 answer of one of the replicas to `path` (asked again a few times), or what they answer."""
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(20):
            for gateway in gateways:
                r = await http.get(f"{gateway.base}{path}")
                if r.status_code == 503:
                    return f"{r.json().get('slug')}: {r.json().get('detail')}"
    return "none when asked one at a time"


async def phase(gateways: list[GatewayProcess], rounds: int) -> dict[str, tuple[float, str]]:
    """The three figures through these replicas: (median, rounds note) by measure."""
    await wait_synced(gateways)
    n = len(gateways)
    times = [await jobs_round(gateways) for _ in range(JOB_ROUNDS)]
    rates = [per_minute(2 * JOBS, c + d) for c, d in times]
    log(f"{n} replica(s): jobs/min {', '.join(f'{r:.0f}' for r in rates)} "
        f"(creates {', '.join(f'{c:.1f}' for c, _ in times)} s, deletes {', '.join(f'{d:.1f}' for _, d in times)} s)")
    out = {M_JOBS: (statistics.median(rates), f"{JOB_ROUNDS} x {2 * JOBS} jobs")}
    for _ in range(3):  # warm-up: connections, the replicas' first answers
        await load(round_robin([g.port for g in gateways]), f"/v1/containers/{TARGET}", connections=n, total=n * 5)
    for measure, path in ((M_GET, f"/v1/containers/{TARGET}"), (M_JOBS_LIST, JOBS_PAGE)):
        tally = CacheTally()
        results = await reads(gateways, path, rounds, tally)
        rate = statistics.median(answered(r) for r in results)
        count = statistics.median(r.requests for r in results)
        refused = sum(r.statuses[503] for r in results)
        out[measure] = (rate, f"{rounds} x {count:,.0f}" + (f", {refused:,} answered 503" if refused else ""))
        log(f"{n} replica(s): {path} {', '.join(f'{answered(r):,.0f}' for r in results)} req/s answered 200; "
            f"503: {refused:,}; X-Gateway-Cache hit / miss / bypass / none {tally.summary()}")
    return out


async def measure(sock: str, replicas: Replicas, rounds: int) -> list[Row]:
    raw = Raw(sock)
    try:
        await raw._run("POST", "/1.0/instances", {"name": TARGET, "source": {"type": "image", "alias": "busybox"}})
        one = await phase(replicas.started, rounds)
        t0 = time.perf_counter()
        for _ in range(REPLICAS - 1):
            await asyncio.to_thread(replicas.add)
        log(f"{REPLICAS - 1} more replicas up in {time.perf_counter() - t0:.1f} s")
        three = await phase(replicas.started, rounds)
        await raw._run("DELETE", f"/1.0/instances/{TARGET}")
    finally:
        await raw.aclose()
    rows: list[Row] = []
    for m in (M_GET, M_JOBS_LIST, M_JOBS):
        (v1, n1), (v3, n3) = one[m], three[m]
        rows.append(Row(m, V_ONE, f"{v1:,.0f}", "", n1))
        rows.append(Row(m, V_THREE, f"{v3:,.0f} ({v3 / v1:.2f}x 1 replica)" if v1 else f"{v3:,.0f}", "", n3))
    return rows


def collect(argv: list[str] | None = None) -> list[Row]:
    rounds = rounds_argument("python -m bench.replicas", argv, ROUNDS)
    raise_fd_limit()
    ensure_installed()
    t0 = time.perf_counter()
    with prepared_daemon() as daemon, bench_database() as url:
        replicas = Replicas(str(daemon.socket_path), url)
        replicas.add()
        log(f"daemon, PostgreSQL and the first replica up in {time.perf_counter() - t0:.1f} s")
        try:
            return asyncio.run(asyncio.wait_for(measure(str(daemon.socket_path), replicas, rounds), 300))
        finally:
            replicas.stop()


def main(argv: list[str] | None = None) -> int:
    return report(collect(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
