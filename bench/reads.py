"""Reads through the gateway against the raw LXD socket: one container, a listing of 500, 1,000 connections of load,
the freshness of a change made on LXD, and the gateway's memory with 1,000 containers.

    .venv/bin/python -m bench.reads [--rounds N]

One private LXD daemon (`dir` pool, busybox image, a default profile without a NIC device, so that containers
are created without NICs and stay stopped) and one gateway process (`bench.gateway.Gateway`: no auth, no rate
limit) for the whole module. The raw contender is the daemon's unix socket asked the equivalent LXD request by
the same client at the same concurrency, in the same run; the ratio column is gateway / raw of the row's figure.
Every gateway answer's `X-Gateway-Cache` header is counted (`hit`, `miss`, `bypass`, or `none` when absent), so
a run shows whether reads came from the gateway's read model. Measured:

1. **GET one container, 16 in flight** (goal: gateway >= 3x raw). The load generator of row 3 (raw asyncio,
   httptools, pre-built keep-alive requests: an httpx client needs more CPU per request than the gateway does, and
   would measure itself) over 16 keep-alive connections, one request in flight on each: the gateway's
   `GET /v1/containers/{name}` against raw `GET /1.0/instances/{name}` on the socket. A round sends 2,000 GETs;
   the clock runs from the first request written to the last answer parsed (connections opened before); req/s =
   2,000 / that time. Median of `--rounds` (5) rounds, each running both contenders in a rotating order.
2. **List 500 containers with status and addresses** (stopped, NIC-less; goal: gateway time <= 0.10x raw). The
   gateway's `GET /v1/containers?limit=500` (the most a page may hold is 1,000, app/http/pagination.py, so this
   is one page; `next_cursor` is followed if the answer is ever cut short, and the rounds column then says how
   many pages) against raw `GET /1.0/instances?recursion=2`, one listing after another on one httpx client. The
   clock starts before the request and stops when the whole body is read and decoded. Median of `--rounds` (5)
   rounds, each listing once per contender in a rotating order.
3. **1,000 connections reading one container** (goal: gateway >= 1,500 req/s). The load generator is this
   module's raw asyncio one (`load`): `asyncio.Protocol` connections writing a pre-built HTTP/1.1 keep-alive
   request, one in flight per connection, and parsing answers with httptools (status and `X-Gateway-Cache` only,
   bodies skipped). 1,000 connections are opened first (not timed); the clock starts when the first request is
   written on every connection and stops when the last answer has been parsed; req/s = requests / that time.
   A round sends `LOAD_REQUESTS` (5,000) requests, or, for a contender too slow for that, as many as were sent
   in `LOAD_SECONDS` (12 s; the rounds column gives the median count). Gateway `GET /v1/containers/{name}` over
   loopback TCP, raw `GET /1.0/instances/{name}` over 1,000 unix-socket connections. Median of `LOAD_ROUNDS` (3)
   rounds, contenders in a rotating order. The generator's ceiling is measured once, before: 5,000 requests of
   the gateway's `/livez` (no LXD), and the generator's own CPU time per request (its process does nothing
   else), whose inverse is what one core of generator can send; both are in the table so the reader can see the
   generator was not the bottleneck.
4. **Freshness of a change made on LXD** (goals p50 <= 20 ms, p99 <= 100 ms). `FRESH_CHANGES` (100) changes per
   contender, alternating: a raw `PATCH /1.0/instances/{name}` of `config.user.n` (LXD answers it synchronously).
   The clock starts when LXD's answer to the PATCH has been read, and stops when the first read showing the new
   value has been received: for the gateway, from a `GET /v1/containers?watch=true` event stream when the
   gateway answers it with `text/event-stream` (opened before the first change; an event read before LXD's
   answer counts as 0), otherwise `GET /v1/containers/{name}` polled back-to-back; for raw,
   `GET /1.0/instances/{name}` polled back-to-back. p50 and p99 (linear interpolation) of the 100 changes, one
   run; the rounds column says polled or SSE.
5. **Gateway memory with 1,000 containers** (goal: at most +30 MiB). The gateway's VmRSS (/proc/<pid>/status):
   idle with the two benchmark containers, after a warm-up (5 GETs and 5 listings) and 1 s settled, before
   anything else; then once 1,000 stopped NIC-less containers exist (created with 32 raw requests in flight, row
   2's 500 among them), row 2 has run and `GET /v1/containers?limit=1000` has been served, 2 s settled. One
   measurement each; no raw contender (the LXD socket keeps no model). The difference includes whatever serving
   the listings left behind.

Order: warm-up, idle memory, 498 containers created, row 2, 500 more created, memory, then rows 1, 3 and 4 (with
the 1,000 containers present). The containers are deleted at the end (32 in flight); the gateway and the daemon
are removed even on failure. Set-up and removal times are printed on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools
import httpx

from app.locallxd.daemon import LocalDaemon, ensure_installed, image_tarball
from bench._table import RAW, Row, ms, ratio, report
from bench.client import Raw, in_flight, interleaved
from bench.gateway import Gateway
from bench.jobs import raise_fd_limit
from bench.load import rss_kib

ROUNDS = 5
GETS = 2000
IN_FLIGHT = 16
LISTED = 500
LOAD_CONNECTIONS = 1000
LOAD_REQUESTS = 5000
LOAD_SECONDS = 12.0
LOAD_ROUNDS = 3
FRESH_CHANGES = 100
MODEL_CONTAINERS = 1000
CREATE_IN_FLIGHT = 32
TARGET = "bench-get"
FRESH = "bench-fresh"
CACHE_KINDS = ("hit", "miss", "bypass", "none")

M_GET = "GET one container, 16 in flight, req/s"
M_LIST = f"list {LISTED} stopped containers with status and addresses"
M_LOAD = f"{LOAD_CONNECTIONS:,} connections reading one container, req/s"
M_FRESH = "freshness of a change made on LXD, p50 / p99"
M_MEM = f"gateway memory (RSS) with {MODEL_CONTAINERS:,} containers"
M_CACHE = "X-Gateway-Cache of the gateway's answers, hit / miss / bypass / none"
V_CEILING = "load generator ceiling: gateway /livez; its CPU per request"
V_IDLE = "idle, 2 containers"
V_FULL = f"{MODEL_CONTAINERS:,} containers, after a listing"


def log(msg: str) -> None:
    print(f"   [bench.reads] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- pure helpers


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class CacheTally:
    """How many gateway answers carried each `X-Gateway-Cache` value (`none`: the header was absent)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, value: str | None) -> None:
        self.counts[(value or "none").strip().lower() or "none"] += 1

    def add_response(self, response: httpx.Response) -> None:
        self.add(response.headers.get("x-gateway-cache"))

    def merge(self, other: CacheTally) -> None:
        self.counts.update(other.counts)

    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """`hit / miss / bypass / none`, then any other value the gateway sent."""
        known = " / ".join(f"{self.counts[k]:,}" for k in CACHE_KINDS)
        other = ", ".join(f"{k} {v:,}" for k, v in sorted(self.counts.items()) if k not in CACHE_KINDS)
        return f"{known} (other: {other})" if other else known


class ResponseReader:
    """Minimal parsing of HTTP/1.1 responses arriving on one keep-alive connection, with httptools: each complete
    response's status and its `X-Gateway-Cache` value; bodies are skipped, never kept."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._cache: str | None = None
        self.statuses: Counter[int] = Counter()
        self.cache = CacheTally()
        self.completed = 0

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-gateway-cache":
            self._cache = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self.statuses[self._parser.get_status_code()] += 1
        self.cache.add(self._cache)
        self._cache = None
        self.completed += 1

    def feed(self, data: bytes) -> int:
        """Parse received bytes; the number of responses they completed. Malformed input raises
        `httptools.HttpParserError`."""
        before = self.completed
        self._parser.feed_data(data)
        return self.completed - before


def get_request(path: str, host: str = "bench") -> bytes:
    """A pre-built keep-alive HTTP/1.1 GET."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode()


def sse_events(lines: Sequence[str]) -> list[tuple[str, str]]:
    """(event, data) of each event in server-sent-event lines (`event:` defaults to `message`; `data:` lines
    join with newlines; comments and other fields are skipped; an event ends at a blank line)."""
    out: list[tuple[str, str]] = []
    event = ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                out.append((event or "message", "\n".join(data)))
            event = ""
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    return out


def containers_in(payload: Any) -> list[dict[str, Any]]:
    """The containers an event's data carries: one resource, `{items: [...]}` or a list (a resync)."""
    if isinstance(payload, list):
        return [c for c in payload if isinstance(c, dict)]
    if isinstance(payload, dict):
        if isinstance(payload.get("items"), list):
            return containers_in(payload["items"])
        for key in ("container", "resource", "object"):
            if isinstance(payload.get(key), dict):
                return [payload[key]]
        return [payload]
    return []


# ---------------------------------------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    requests: int
    seconds: float
    cpu_seconds: float
    statuses: Counter[int]
    cache: CacheTally
    errors: Counter[str]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return self.requests - self.statuses[200]


class _Run:
    """What the connections of one load run share: the request, the count left to send (no new request once the
    deadline has passed), how many were sent, the last answer's time."""

    def __init__(self, request: bytes, total: int, seconds: float | None) -> None:
        self.request = request
        self.left = total
        self.seconds = seconds
        self.deadline = math.inf
        self.sent = 0
        self.last = 0.0
        self.errors: Counter[str] = Counter()

    def start(self) -> None:
        if self.seconds is not None:
            self.deadline = time.perf_counter() + self.seconds

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() > self.deadline:
            return False
        self.left -= 1
        self.sent += 1
        return True


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes the next request when the previous answer is complete."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.reader = ResponseReader()
        self.transport: asyncio.Transport | None = None
        self.waiting = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send_next(self) -> None:
        assert self.transport is not None
        if self.run.take():
            self.waiting = True
            self.transport.write(self.run.request)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            done = self.reader.feed(data)
        except httptools.HttpParserError as exc:
            self.run.errors[f"unparsable answer: {exc}"] += 1
            self.waiting = False
            assert self.transport is not None
            self.transport.close()
            return
        if done:
            self.run.last = time.perf_counter()
            self.waiting = False
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:
            self.run.errors["closed before the answer"] += 1
            self.waiting = False
        if not self.closed.done():
            self.closed.set_result(None)


Connect = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]]]


def tcp(host: str, port: int) -> Connect:
    return lambda factory: asyncio.get_running_loop().create_connection(factory, host, port)


def unix(path: str) -> Connect:
    return lambda factory: asyncio.get_running_loop().create_unix_connection(factory, path)


async def load(connect: Connect, path: str, *, connections: int, total: int, seconds: float | None = None,
               host: str = "bench") -> LoadResult:
    """`total` GETs of `path` over `connections` keep-alive connections, each with one request in flight; with
    `seconds`, no new request is sent past that time (the result counts those sent). The connections are opened
    first (100 at a time, not timed); the clock runs from the first request written on all of them to the last
    answer parsed."""
    run = _Run(get_request(path, host), total, seconds)
    conns: list[_Connection] = []
    try:
        for i in range(0, connections, 100):
            opened = await asyncio.gather(*(connect(lambda: _Connection(run))
                                            for _ in range(min(100, connections - i))))
            conns += [p for _, p in opened if isinstance(p, _Connection)]
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        run.start()
        for c in conns:
            c.send_next()
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), 600)
        seconds = (run.last or time.perf_counter()) - t0
        cpu = time.process_time() - cpu0
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    statuses: Counter[int] = Counter()
    cache = CacheTally()
    for c in conns:
        statuses.update(c.reader.statuses)
        cache.merge(c.reader.cache)
    return LoadResult(run.sent, seconds, cpu, statuses, cache, run.errors)


# ---------------------------------------------------------------------------------------------- LXD set-up


async def create_containers(raw: Raw, names: list[str]) -> float:
    """Create stopped busybox containers (the default profile has no NIC), CREATE_IN_FLIGHT at a time; seconds."""
    queue = list(names)
    t0 = time.perf_counter()

    async def one() -> None:
        name = queue.pop()
        await raw._run("POST", "/1.0/instances", {"name": name, "source": {"type": "image", "alias": "busybox"}})

    await in_flight(len(queue), CREATE_IN_FLIGHT, one)
    return time.perf_counter() - t0


async def delete_containers(raw: Raw, names: list[str]) -> float:
    queue = list(names)
    t0 = time.perf_counter()

    async def one() -> None:
        await raw._run("DELETE", f"/1.0/instances/{queue.pop()}")

    await in_flight(len(queue), CREATE_IN_FLIGHT, one)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- freshness


class Watch:
    """`GET /v1/containers?watch=true` when the gateway answers it as an event stream: the time each value of
    `config.user.n` of one container was first seen."""

    def __init__(self, http: httpx.AsyncClient, name: str, tally: CacheTally) -> None:
        self.http, self.name, self.tally = http, name, tally
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[bool]:
        """Yields whether the gateway serves the stream (its content type is text/event-stream)."""
        async with self.http.stream("GET", "/v1/containers", params={"watch": "true"},
                                    headers={"Accept": "text/event-stream"}) as response:
            self.tally.add_response(response)
            streaming = (response.status_code == 200
                         and response.headers.get("content-type", "").startswith("text/event-stream"))
            if streaming:
                self._task = asyncio.create_task(self._follow(response))
            try:
                yield streaming
            finally:
                if self._task is not None:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                        await self._task

    async def _follow(self, response: httpx.Response) -> None:
        pending: list[str] = []
        async for line in response.aiter_lines():
            pending.append(line)
            if line:
                continue
            now = time.perf_counter()
            for _, data in sse_events(pending):
                with contextlib.suppress(ValueError):
                    for c in containers_in(json.loads(data)):
                        value = (c.get("config") or {}).get("user.n")
                        if c.get("name") == self.name and value is not None:
                            self.seen.setdefault(str(value), now)
                            self.changed.set()
            pending = []

    async def wait_for(self, value: str, timeout: float = 10.0) -> float:
        async with asyncio.timeout(timeout):
            while value not in self.seen:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[value]


async def freshness(raw: Raw, http: httpx.AsyncClient, changes: int,
                    tally: CacheTally) -> tuple[list[float], list[float], str]:
    """Seconds from LXD's answer to a PATCH of `config.user.n` until the change is seen: through the gateway
    (event stream or back-to-back GETs) and raw (back-to-back GETs); and which method the gateway's used."""
    counter = 0

    async def change() -> tuple[str, float]:
        nonlocal counter
        counter += 1
        value = f"{counter}-{time.time_ns()}"
        r = await raw.http.patch(f"/1.0/instances/{FRESH}", json={"config": {"user.n": value}})
        answered = time.perf_counter()
        if r.status_code != 200:
            raise RuntimeError(f"PATCH of {FRESH}: {r.status_code} {r.text[:300]}")
        return value, answered

    async def poll_gateway(value: str) -> float:
        async with asyncio.timeout(10):
            while True:
                r = await http.get(f"/v1/containers/{FRESH}")
                tally.add_response(r)
                r.raise_for_status()
                if r.json()["config"].get("user.n") == value:
                    return time.perf_counter()

    async def poll_raw(value: str) -> float:
        async with asyncio.timeout(10):
            while True:
                if (await raw.get(FRESH))["config"].get("user.n") == value:
                    return time.perf_counter()

    gateway: list[float] = []
    direct: list[float] = []
    watch = Watch(http, FRESH, tally)
    async with watch.open() as streaming:
        for _ in range(changes):
            value, answered = await change()
            seen = await (watch.wait_for(value) if streaming else poll_gateway(value))
            gateway.append(max(0.0, seen - answered))
            value, answered = await change()
            direct.append(await poll_raw(value) - answered)
    return gateway, direct, "SSE" if streaming else "polled"


# ---------------------------------------------------------------------------------------------- run


async def list_all(http: httpx.AsyncClient, limit: int, tally: CacheTally) -> tuple[list[dict[str, Any]], int]:
    """Every container through the gateway's listing, following `next_cursor`; (items, pages)."""
    items: list[dict[str, Any]] = []
    cursor = ""
    pages = 0
    while True:
        r = await http.get("/v1/containers", params={"limit": limit, "cursor": cursor})
        tally.add_response(r)
        r.raise_for_status()
        body = r.json()
        items += body["items"]
        pages += 1
        cursor = body.get("next_cursor") or ""
        if not cursor:
            return items, pages


async def measure(sock: str, gw: Gateway, rounds: int) -> list[Row]:
    rows: list[Row] = []
    tallies = {k: CacheTally() for k in ("get", "list", "load", "fresh")}
    http = httpx.AsyncClient(base_url=gw.base, timeout=httpx.Timeout(180.0),
                             limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
    raw = Raw(sock)
    created: list[str] = []
    try:
        t = await create_containers(raw, [TARGET, FRESH])
        created += [TARGET, FRESH]
        log(f"created the 2 benchmark containers in {t:.1f} s")
        scratch = CacheTally()
        for _ in range(5):  # warm-up: connections, the gateway's first LXD calls (or its model)
            r = await http.get(f"/v1/containers/{TARGET}")
            scratch.add_response(r)
            r.raise_for_status()
            await list_all(http, LISTED, scratch)
            await raw.get(TARGET)

        # 5a. idle memory with the benchmark containers
        await asyncio.sleep(1.0)
        idle = rss_kib(gw.proc.pid)

        # 2. list 500 containers
        fill = [f"r{i:04d}" for i in range(LISTED - len(created))]
        t = await create_containers(raw, fill)
        created += fill
        log(f"created {len(fill)} containers in {t:.1f} s")
        items, _ = await list_all(http, LISTED, scratch)
        if len(items) != LISTED:
            raise RuntimeError(f"the gateway lists {len(items)} containers, not {LISTED}")
        page_counts: list[int] = []

        async def gw_list() -> None:
            _, n = await list_all(http, LISTED, tallies["list"])
            page_counts.append(n)

        t_list = await interleaved(rounds, {"gateway": gw_list, RAW: raw.list_state})
        pages_note = "" if set(page_counts) == {1} else f", {max(page_counts)} pages"
        rows += [Row(M_LIST, k, ms(v), ratio(v, t_list[RAW]), f"{rounds}{pages_note if k == 'gateway' else ''}")
                 for k, v in t_list.items()]
        log(f"list {LISTED}: gateway {ms(t_list['gateway'])}, raw {ms(t_list[RAW])}")

        # 5b. memory with 1,000 containers, a listing served
        more = [f"r{i:04d}" for i in range(len(fill), MODEL_CONTAINERS - 2)]
        t = await create_containers(raw, more)
        created += more
        log(f"created {len(more)} more containers in {t:.1f} s")
        items, _ = await list_all(http, MODEL_CONTAINERS, scratch)
        if len(items) != MODEL_CONTAINERS:
            raise RuntimeError(f"the gateway lists {len(items)} containers, not {MODEL_CONTAINERS}")
        await asyncio.sleep(2.0)
        full = rss_kib(gw.proc.pid)
        rows.append(Row(M_MEM, V_IDLE, f"{idle / 1024:.0f} MiB", "", "1"))
        rows.append(Row(M_MEM, V_FULL, f"{full / 1024:.0f} MiB (+{(full - idle) / 1024:.0f} MiB)", "", "1"))
        log(f"memory: idle {idle / 1024:.1f} MiB, {MODEL_CONTAINERS} containers {full / 1024:.1f} MiB")

        # 1. GET one container, 16 in flight: 16 connections of the load generator, one request in flight on each
        raise_fd_limit()
        port = int(gw.base.rpartition(":")[2])
        get_runs: dict[str, Callable[[], Awaitable[LoadResult]]] = {
            "gateway": lambda: load(tcp("127.0.0.1", port), f"/v1/containers/{TARGET}", connections=IN_FLIGHT,
                                    total=GETS),
            RAW: lambda: load(unix(sock), f"/1.0/instances/{TARGET}", connections=IN_FLIGHT, total=GETS,
                              host="lxd")}
        got: dict[str, list[float]] = {"gateway": [], RAW: []}
        for i in range(rounds):
            keys = list(get_runs)
            for k in keys[i % 2:] + keys[:i % 2]:
                res = await get_runs[k]()
                if res.failed or res.errors:
                    raise RuntimeError(f"{k} GET one: {res.failed} of {res.requests} failed, "
                                       f"{dict(res.statuses)} {dict(res.errors)}")
                got[k].append(res.rate)
                if k == "gateway":
                    tallies["get"].merge(res.cache)
        rates = {k: statistics.median(v) for k, v in got.items()}
        rows += [Row(M_GET, k, f"{v:,.0f}", ratio(v, rates[RAW]), str(rounds)) for k, v in rates.items()]
        log(f"GET one: gateway {rates['gateway']:,.0f} req/s, raw {rates[RAW]:,.0f} req/s")

        # 3. load: the generator's ceiling, then 1,000 connections on the gateway and on the socket
        ceiling = await load(tcp("127.0.0.1", port), "/livez", connections=LOAD_CONNECTIONS, total=LOAD_REQUESTS)
        if ceiling.failed or ceiling.errors:
            raise RuntimeError(f"/livez under load: {dict(ceiling.statuses)} {dict(ceiling.errors)}")
        log(f"generator ceiling: /livez {ceiling.rate:,.0f} req/s, generator CPU "
            f"{ceiling.cpu_seconds / ceiling.requests * 1e6:.0f} us/request")
        results: dict[str, list[LoadResult]] = {"gateway": [], RAW: []}
        runs: dict[str, Callable[[], Awaitable[LoadResult]]] = {
            "gateway": lambda: load(tcp("127.0.0.1", port), f"/v1/containers/{TARGET}",
                                    connections=LOAD_CONNECTIONS, total=LOAD_REQUESTS, seconds=LOAD_SECONDS),
            RAW: lambda: load(unix(sock), f"/1.0/instances/{TARGET}", connections=LOAD_CONNECTIONS,
                              total=LOAD_REQUESTS, seconds=LOAD_SECONDS, host="lxd")}
        for i in range(LOAD_ROUNDS):
            keys = list(runs)
            for k in keys[i % 2:] + keys[:i % 2]:
                res = await runs[k]()
                if res.failed or res.errors:
                    raise RuntimeError(f"{k} under load: {res.failed} of {res.requests} failed, "
                                       f"{dict(res.statuses)} {dict(res.errors)}")
                results[k].append(res)
                if k == "gateway":
                    tallies["load"].merge(res.cache)
        load_rates = {k: statistics.median(x.rate for x in v) for k, v in results.items()}
        rows += [Row(M_LOAD, k, f"{v:,.0f}", ratio(v, load_rates[RAW]),
                     f"{LOAD_ROUNDS} x {statistics.median(x.requests for x in results[k]):,.0f}")
                 for k, v in load_rates.items()]
        rows.append(Row(M_LOAD, V_CEILING, f"{ceiling.rate:,.0f}; "
                        f"{ceiling.cpu_seconds / ceiling.requests * 1e6:.0f} µs "
                        f"(<= {ceiling.requests / ceiling.cpu_seconds:,.0f}/s a core)", "", "1"))
        log(f"1,000 connections: gateway {load_rates['gateway']:,.0f} req/s, raw {load_rates[RAW]:,.0f} req/s")

        # 4. freshness of a change made on LXD
        gw_lat, raw_lat, how = await freshness(raw, http, FRESH_CHANGES, tallies["fresh"])
        for via, lat in (("gateway", gw_lat), (RAW, raw_lat)):
            rows.append(Row(M_FRESH, via, f"{ms(percentile(lat, 50), 1)} / {ms(percentile(lat, 99), 1)}",
                            ratio(percentile(lat, 50), percentile(raw_lat, 50)),
                            f"{len(lat)} changes, {how if via == 'gateway' else 'polled'}"))
        log(f"freshness ({how}): gateway p50 {ms(percentile(gw_lat, 50), 1)} p99 {ms(percentile(gw_lat, 99), 1)}; "
            f"raw p50 {ms(percentile(raw_lat, 50), 1)}")

        for via, key in (("GET one container", "get"), (f"list {LISTED}", "list"),
                         (f"{LOAD_CONNECTIONS:,} connections", "load"), ("freshness", "fresh")):
            rows.append(Row(M_CACHE, via, tallies[key].summary(), "", f"{tallies[key].total():,} answers"))
        log("X-Gateway-Cache hit / miss / bypass / none: " + "; ".join(
            f"{k} {v.summary()}" for k, v in tallies.items()))

        t = await delete_containers(raw, created)
        created = []
        log(f"deleted {MODEL_CONTAINERS} containers in {t:.1f} s")
    finally:
        await http.aclose()
        await raw.aclose()
    return rows


def rounds_argument(prog: str, argv: list[str] | None, default: int) -> int:
    """`--rounds N` of a standalone module's command line (`default` when not given)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--rounds", type=int, default=default)
    return int(parser.parse_args(argv if argv is not None else []).rounds)


@contextlib.contextmanager
def prepared_daemon() -> Iterator[LocalDaemon]:
    """A private LXD daemon (`dir` pool, busybox image, a default profile without a NIC), stopped at the end."""
    daemon = LocalDaemon()
    try:
        daemon.start()
        daemon.prepare(image_tarball=image_tarball(), https=False, bridge=False)  # default profile: no NIC
        yield daemon
    finally:
        daemon.stop()


def collect(argv: list[str] | None = None) -> list[Row]:
    rounds = rounds_argument("python -m bench.reads", argv, ROUNDS)
    raise_fd_limit()
    ensure_installed()
    t0 = time.perf_counter()
    with prepared_daemon() as daemon:
        gw = Gateway(str(daemon.socket_path))
        try:
            log(f"daemon and gateway up in {time.perf_counter() - t0:.1f} s")
            return asyncio.run(asyncio.wait_for(measure(str(daemon.socket_path), gw, rounds), 600))
        finally:
            gw.stop()


def main(argv: list[str] | None = None) -> int:
    return report(collect(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
