"""The async LXD client against pylxd and raw httpx on the unix socket, on a private daemon started for the run.

    .venv/bin/python -m bench.client [--rounds N]

Workloads, each the median of several rounds:

* 500 GETs of one instance: this client and raw httpx with 16 requests in flight; pylxd one after another (it
  is synchronous; `client.instances.get` in a loop is how it is used).
* listing 50 instances with their state (`recursion=2`, one request for all three).
* 10 create + start + delete cycles of a busybox container: this client and raw httpx run the 10 concurrently
  (asyncio); pylxd as its users write it, a sequential loop with `wait=True`, and also (for reference) with 10
  threads.

Rounds are interleaved (each round runs every client once, in a rotating order). Raw httpx is the floor here:
the same HTTP requests with no decoding beyond `json()`. The daemon, its `dir` pool and the busybox image are
made by `app.locallxd.daemon` and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx

from app.locallxd.daemon import LocalDaemon, ensure_installed, image_tarball
from app.lxd import Client
from bench._table import RAW, Row, ms, ratio

GETS = 500
IN_FLIGHT = 16
LISTED = 50
CYCLES = 10


async def interleaved(rounds: int, runners: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, float]:
    """Median time of each runner; every round runs each once, in a rotating order, so that drift in the
    machine's load falls on all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    keys = list(runners)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            await runners[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def threaded(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A synchronous (pylxd) workload, run in a worker thread so the loop stays free."""
    return lambda: asyncio.to_thread(fn)


async def in_flight(n: int, width: int, one: Callable[[], Awaitable[Any]]) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(width)))


# ---------------------------------------------------------------------------------------------- raw httpx


class Raw:
    """The same calls with httpx alone: the lower bound for any client on this socket."""

    def __init__(self, sock: str) -> None:
        self.http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://lxd",
                                      timeout=httpx.Timeout(120.0),
                                      limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))

    async def get(self, name: str, recursion: int = 0) -> Any:
        params = {"recursion": recursion} if recursion else None
        return (await self.http.get(f"/1.0/instances/{name}", params=params)).json()["metadata"]

    async def list_state(self) -> Any:
        return (await self.http.get("/1.0/instances", params={"recursion": 2})).json()["metadata"]

    async def _run(self, method: str, path: str, body: Any = None) -> None:
        r = (await self.http.request(method, path, json=body)).json()
        if r["type"] == "error":
            raise RuntimeError(r["error"])
        if r["type"] == "async":
            w = (await self.http.get(f"{r['operation']}/wait", params={"timeout": 120})).json()
            if w["type"] == "error" or w["metadata"]["status_code"] != 200:
                raise RuntimeError(w.get("error") or w["metadata"]["err"])

    async def cycle(self, name: str) -> None:
        await self._run("POST", "/1.0/instances", {"name": name, "source": {"type": "image", "alias": "busybox"}})
        await self._run("PUT", f"/1.0/instances/{name}/state", {"action": "start"})
        await self._run("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True})
        await self._run("DELETE", f"/1.0/instances/{name}")

    async def aclose(self) -> None:
        await self.http.aclose()


# ---------------------------------------------------------------------------------------------- this client


async def ours_cycle(lxd: Client, name: str) -> None:
    await lxd.instances.create(name, image="busybox", start=True)
    await lxd.instances.stop(name, force=True)
    await lxd.instances.delete(name)


# ---------------------------------------------------------------------------------------------- pylxd


def pylxd_cycle(client: Any, name: str) -> None:
    inst = client.instances.create({"name": name, "source": {"type": "image", "alias": "busybox"}}, wait=True)
    inst.start(wait=True)
    inst.stop(force=True, wait=True)
    inst.delete(wait=True)


def names(n: int) -> list[str]:
    return [f"b-{uuid.uuid4().hex[:10]}" for _ in range(n)]


# ---------------------------------------------------------------------------------------------- run


async def run(sock: str, rounds: int) -> dict[str, dict[str, float]]:
    import pylxd

    results: dict[str, dict[str, float]] = {"get": {}, "list": {}, "cycle": {}}
    async with Client.unix(sock) as lxd:
        target = "bench-get"
        await lxd.instances.create(target, image="busybox")
        listed = [f"bench-l{i:02d}" for i in range(LISTED - 1)]
        for batch in range(0, len(listed), 10):
            await asyncio.gather(*(lxd.instances.create(n, image="busybox") for n in listed[batch:batch + 10]))
        raw = Raw(sock)
        pyl = pylxd.Client(endpoint=sock)
        try:
            # warm-up: connections, events stream, server facts
            await lxd.instances.get(target)
            await raw.get(target)
            pyl.instances.get(target)

            results["get"] = await interleaved(rounds, {
                "this client": lambda: in_flight(GETS, IN_FLIGHT, lambda: lxd.instances.get(target)),
                "raw httpx": lambda: in_flight(GETS, IN_FLIGHT, lambda: raw.get(target)),
                "pylxd": threaded(lambda: [pyl.instances.get(target) for _ in range(GETS)])})
            results["list"] = await interleaved(rounds * 2, {
                "this client": lambda: lxd.instances.list(recursion=2),
                "raw httpx": raw.list_state,
                "pylxd": threaded(lambda: pyl.instances.all(recursion=2))})
            assert len(await lxd.instances.list(recursion=2)) == LISTED

            def pylxd_sequential() -> None:
                for n in names(CYCLES):
                    pylxd_cycle(pyl, n)

            def pylxd_threads() -> None:
                with ThreadPoolExecutor(CYCLES) as pool:
                    list(pool.map(lambda n: pylxd_cycle(pyl, n), names(CYCLES)))

            results["cycle"] = await interleaved(max(3, rounds // 2), {
                "this client": lambda: asyncio.gather(*(ours_cycle(lxd, n) for n in names(CYCLES))),
                "raw httpx": lambda: asyncio.gather(*(raw.cycle(n) for n in names(CYCLES))),
                "pylxd (sequential)": threaded(pylxd_sequential),
                "pylxd (10 threads)": threaded(pylxd_threads)})
        finally:
            await raw.aclose()
            for n in [target, *listed]:
                with contextlib.suppress(Exception):
                    await lxd.instances.delete(n)
    return results


def table(results: dict[str, dict[str, float]], rounds: int) -> str:
    titles = {"get": f"{GETS} GETs of one instance ({IN_FLIGHT} in flight; pylxd sequential)",
              "list": f"list {LISTED} instances with state (recursion=2)",
              "cycle": f"{CYCLES} create+start+delete cycles (async: concurrent)"}
    lines = [f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'}: "
             f"{platform.machine()}, {_cores()} cores, Python {platform.python_version()}, LXD "
             f"{_lxd_version()}, unix socket, `dir` pool, busybox image; median of {rounds} rounds "
             f"({max(3, rounds // 2)} for the cycles, {rounds * 2} for the listing).", "",
             "| workload | client | median | vs this client |", "|---|---|---:|---:|"]
    for key, row in results.items():
        ours = row["this client"]
        for name, t in row.items():
            ratio = "1.00x" if name == "this client" else f"{t / ours:.2f}x"
            lines.append(f"| {titles[key]} | {name} | {t * 1000:.0f} ms | {ratio} |")
    get = results["get"]
    cyc = results["cycle"]
    lines += ["", f"GETs: this client takes {get['this client'] / get['raw httpx']:.2f}x the time of raw httpx "
              f"(goal: at most 1.10x). Create cycles: pylxd sequential takes "
              f"{cyc['pylxd (sequential)'] / cyc['this client']:.1f}x as long as this client (goal: at least 3x); "
              f"pylxd with 10 threads {cyc['pylxd (10 threads)'] / cyc['this client']:.1f}x."]
    return "\n".join(lines)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _lxd_version() -> str:
    import subprocess

    return subprocess.run(["lxd", "--version"], capture_output=True, text=True, check=False).stdout.strip()


def measure(rounds: int) -> dict[str, dict[str, float]]:
    """Start a private daemon, run the workloads, remove the daemon."""
    ensure_installed()
    daemon = LocalDaemon()
    try:
        daemon.start()
        daemon.prepare(image_tarball=image_tarball(), https=False, bridge=False)
        return asyncio.run(run(str(daemon.socket_path), rounds))
    finally:
        daemon.stop()


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args(argv if argv is not None else [])


def collect(argv: list[str] | None = None) -> list[Row]:
    """Rows for `python -m bench`'s table; ratios against raw httpx on the socket, from the same run."""
    rounds = _args(argv).rounds
    res = measure(rounds)
    via = {"this client": "app.lxd client", "raw httpx": RAW, "pylxd (sequential)": "pylxd, sequential",
           "pylxd (10 threads)": "pylxd, 10 threads"}
    spec = {"get": (f"{GETS} GETs, {IN_FLIGHT} in flight (pylxd: sequential)", rounds),
            "list": (f"list {LISTED} instances with state, recursion=2", rounds * 2),
            "cycle": (f"{CYCLES} create+start+stop+delete cycles", max(3, rounds // 2))}
    rows: list[Row] = []
    for key, (measure_name, n) in spec.items():
        raw = res[key]["raw httpx"]
        rows += [Row(measure_name, via.get(k, k), ms(t), ratio(t, raw), str(n)) for k, t in res[key].items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    try:
        import pylxd  # noqa: F401
    except ImportError:
        print("bench/client.py compares with pylxd: install it with `.venv/bin/pip install -e '.[bench]'`",
              file=sys.stderr)
        return 1
    print(table(measure(args.rounds), args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
