"""Load: 1,000 concurrent read requests and 200 concurrent websocket subscribers against a real gateway process
(on a private LXD of its own), with the gateway's peak memory.

    python -m bench.load [--reads 1000] [--subscribers 200]

Everything stays on this machine: the gateway listens on a loopback port, LXD on a unix socket.

`python -m bench` does not start a gateway for this module: bench/gateway.py puts the same load (`reads`,
`subscribers`) on its own gateway and reports the peak memory in the combined table.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from app.locallxd.daemon import LocalDaemon, ensure_installed, image_tarball
from tests.support.gateway import running_gateway

ROOT = Path(__file__).resolve().parents[1]
PART_OF = "gateway"
READ_PATHS = ("/v1/containers", "/v1/jobs", "/v1/server", "/v1/profiles", "/v1/images", "/readyz")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def reads(base: str, count: int, paths: list[str]) -> tuple[int, int, float]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
        start = time.perf_counter()
        results = await asyncio.gather(*(c.get(paths[i % len(paths)]) for i in range(count)),
                                       return_exceptions=True)
        elapsed = time.perf_counter() - start
    ok = sum(1 for r in results if isinstance(r, httpx.Response) and r.status_code == 200)
    bad: dict[str, int] = {}
    for r in results:
        if not (isinstance(r, httpx.Response) and r.status_code == 200):
            label = f"{r.request.url.path} {r.status_code}" if isinstance(r, httpx.Response) else type(r).__name__
            bad[label] = bad.get(label, 0) + 1
    if bad:
        print(f"failed reads: {bad}", file=sys.stderr)
    return ok, count - ok, elapsed


async def subscribers(ws_base: str, count: int, hold: float) -> tuple[int, int]:
    opened: list[Any] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        try:
            ws = await websockets.connect(f"{ws_base}/v1/jobs/ws", open_timeout=60, max_queue=64)
            opened.append(ws)
        except Exception:
            errors += 1

    await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(hold)
    alive = sum(1 for ws in opened if ws.close_code is None)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return alive, errors + (len(opened) - alive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--paths", default=",".join(READ_PATHS), help="comma-separated read routes")
    args = parser.parse_args(argv)
    ensure_installed()
    daemon = LocalDaemon()
    data = Path(tempfile.mkdtemp(prefix="lxd-gateway-bench-"))
    try:
        daemon.start()
        daemon.prepare(image_tarball=image_tarball(), https=False)
        with running_gateway(str(daemon.socket_path), data, ready_path="/readyz", LXDGW_RATE_LIMIT="",
                             LXDGW_LOG_LEVEL="WARNING") as gw:
            schema_paths = set(httpx.get(f"{gw.base}/openapi.json").json()["paths"])
            paths = [p for p in args.paths.split(",") if p in schema_paths or p == "/readyz"]
            idle = rss_kib(gw.proc.pid)
            ok, failed, elapsed = asyncio.run(reads(gw.base, args.reads, paths))
            alive, ws_failed = asyncio.run(subscribers(gw.ws_base, args.subscribers, hold=2.0))
            peak = rss_kib(gw.proc.pid, "VmHWM")
        rows = [
            ("concurrent reads", f"{args.reads} over {', '.join(paths)}", f"{ok} ok, {failed} failed",
             f"{elapsed:.2f} s ({args.reads / elapsed:.0f} req/s)"),
            ("websocket subscribers", f"{args.subscribers} on /v1/jobs/ws", f"{alive} held, {ws_failed} failed",
             "2 s hold"),
            ("gateway memory", "RSS idle / peak", f"{idle / 1024:.1f} MiB / {peak / 1024:.1f} MiB", ""),
        ]
        print(f"{'measure':24} | {'load':52} | {'result':28} | time")
        print("-" * 125)
        for r in rows:
            print(f"{r[0]:24} | {r[1]:52} | {r[2]:28} | {r[3]}")
        return 0 if failed == 0 and ws_failed == 0 else 1
    finally:
        daemon.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
