"""Jobs benchmark: progress-to-websocket latency and the memory of idle websocket subscribers.

Runs a real gateway (uvicorn, one process) on a loopback port with this module loaded as an extension, which adds
the job kind `bench.progress` (it reports progress at a steady rate, each report stamped with the time it was made)
and a route to start it. Measures:

* latency from `ctx.progress(...)` in the job (where LXD's progress events enter the gateway) to the message read by
  a websocket client on `/v1/jobs/{id}/ws`: p50, p99;
* the gateway's resident memory with 1,000 idle websocket subscribers on `/v1/jobs/ws`, per subscriber.

`python -m bench.jobs` prints these for one job; `python -m bench` takes p50 and p99 as medians over ROUNDS jobs.
Bounded (about 30 s), stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import websockets
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from app.jobs import JobContext, JobKind
from app.jobs.starter import JobStarterDep
from bench._table import Row

PROGRESS_EVENTS = 500
PROGRESS_INTERVAL = 0.005
SUBSCRIBERS = 1000
ROUNDS = 5
ROOT = Path(__file__).resolve().parents[1]


async def bench_progress(ctx: JobContext) -> dict[str, int]:
    count = int(ctx.params.get("count", PROGRESS_EVENTS))
    await asyncio.sleep(float(ctx.params.get("delay", 0.5)))
    for i in range(count):
        await ctx.progress("bench", i * 100 // count, str(time.time_ns()))
        await asyncio.sleep(float(ctx.params.get("interval", PROGRESS_INTERVAL)))
    await asyncio.sleep(float(ctx.params.get("hold", 0)))
    return {"count": count}


PROGRESS = JobKind.of("bench.progress", bench_progress)
JOB_KINDS = (PROGRESS,)


def install(app: FastAPI) -> None:
    for kind in JOB_KINDS:
        app.state.job_kinds.register(kind)

    @app.post("/v1/bench-jobs", include_in_schema=False)
    async def start_bench_job(jobs: JobStarterDep, params: dict[str, Any] = Body(default_factory=dict)) -> JSONResponse:
        return await jobs.start("bench.progress", params=params, resource="/v1/bench", remote="bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _latency(base: str, ws_base: str) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        job = (await c.post("/v1/bench-jobs", json={"delay": 0.5})).json()
    latencies: list[float] = []
    async with websockets.connect(f"{ws_base}/v1/jobs/{job['id']}/ws", max_size=None) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(60):
                while True:
                    msg = json.loads(await ws.recv())
                    now = time.time_ns()
                    if msg["type"] == "progress" and msg["data"]["stage"] == "bench":
                        latencies.append((now - int(msg["data"]["message"])) / 1e6)
    return latencies


async def _idle_memory(base: str, ws_base: str, pid: int) -> tuple[int, int, int]:
    before = _rss_kib(pid)
    conns = []
    try:
        for i in range(SUBSCRIBERS):
            conns.append(await websockets.connect(f"{ws_base}/v1/jobs/ws?kind=bench.idle-{i}"))
        await asyncio.sleep(1.0)
        after = _rss_kib(pid)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return before, after, len(conns)


async def run(rounds: int = 1) -> dict[str, Any]:
    raise_fd_limit()
    port = _free_port()
    with TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
        env.update({
            "LXDGW_REMOTES": json.dumps([{"name": "bench", "url": "unix:///nonexistent/unix.socket",
                                          "default": True}]),
            "LXDGW_DATA_DIR": tmp, "LXDGW_AUTH_ENABLED": "false", "LXDGW_BIND": f"127.0.0.1:{port}",
            "LXDGW_EXTENSIONS": '["bench.jobs"]', "LXDGW_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
        })
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "serve", cwd=ROOT, env=env,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
        try:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with httpx.AsyncClient() as c:
                            if (await c.get(f"{base}/livez")).status_code == 200:
                                break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.1)
            per_round = [await _latency(base, ws_base) for _ in range(max(1, rounds))]
            before, after, count = await _idle_memory(base, ws_base, proc.pid)
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    p50s = [statistics.median(la) if la else float("nan") for la in per_round]
    p99s = [statistics.quantiles(la, n=100)[98] if len(la) >= 2 else float("nan") for la in per_round]
    return {"events": sum(len(la) for la in per_round), "rounds": len(per_round), "p50_ms": statistics.median(p50s),
            "p99_ms": statistics.median(p99s), "max_ms": max(max(la, default=float("nan")) for la in per_round),
            "subscribers": count, "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "per_subscriber_kib": (after - before) / max(count, 1)}


def collect(argv: list[str] | None = None) -> list[Row]:
    """Rows for `python -m bench`'s table: p50 and p99 are medians over ROUNDS jobs of PROGRESS_EVENTS events."""
    r = asyncio.run(asyncio.wait_for(run(ROUNDS), 180))
    return [Row("job-event latency, progress -> websocket, p50 / p99", "gateway",
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms", "", f"{r['rounds']} x {PROGRESS_EVENTS} events"),
            Row(f"memory per idle websocket subscriber ({SUBSCRIBERS:,})", "gateway",
                f"{r['per_subscriber_kib']:.0f} KiB", "", "1")]


def main() -> int:
    r = asyncio.run(asyncio.wait_for(run(), 120))  # one job; `python -m bench` runs ROUNDS
    rows = [
        ("progress -> websocket p50", f"{r['p50_ms']:.2f} ms"),
        ("progress -> websocket p99", f"{r['p99_ms']:.2f} ms"),
        ("progress -> websocket max", f"{r['max_ms']:.2f} ms"),
        ("progress events measured", str(r["events"])),
        ("idle websocket subscribers", str(r["subscribers"])),
        ("gateway RSS before", f"{r['rss_before_mib']:.1f} MiB"),
        ("gateway RSS with subscribers", f"{r['rss_after_mib']:.1f} MiB"),
        ("memory per idle subscriber", f"{r['per_subscriber_kib']:.1f} KiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
