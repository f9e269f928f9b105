"""What bounding connections costs: request throughput of a real gateway process under uvicorn's own HTTP protocols
(httptools, h11) and under the guarded ones the gateway runs (app/http/listener.py: head size, head time, open
connections), on one private LXD daemon.

    .venv/bin/python -m bench.listener [--rounds N]

For each server: requests per second of `GET /livez` (no LXD) and of `GET /v1/profiles` (one LXD call per
request) over 16 keep-alive connections, and of `GET /livez` on a new connection per request (where the guard does
the most: the connection count and the head timer), from one asyncio client on the same machine (2 cores are
shared by client, gateway and LXD: compare the figures with each other, not with other machines), and the
gateway process's CPU time per request, which other load on the machine disturbs less. Every round measures each
server once, in a rotating order; the figures are medians over the rounds. About a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.locallxd.daemon import LocalDaemon, ensure_installed, free_port
from tests.support.gateway import GatewayProcess, gateway_env, start_gateway

SERVERS = {  # name -> (parser, guarded)
    "uvicorn httptools (unguarded)": ("httptools", False),
    "uvicorn h11 (unguarded)": ("h11", False),
    "guarded httptools (the gateway's)": ("httptools", True),
    "guarded h11": ("h11", True),
}
BASELINE = "uvicorn httptools (unguarded)"
CONNECTIONS = 16
LIVEZ = 3000
LXD_GETS = 600
FRESH = 600
ROUNDS = 3
LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    match = LENGTH.search(head)
    await reader.readexactly(int(match[1]) if match else 0)


async def keep_alive(port: int, path: str, total: int) -> float:
    """Requests per second: `total` GETs of `path` over CONNECTIONS keep-alive connections."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                await _exchange(reader, writer, request)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection(total // CONNECTIONS) for _ in range(CONNECTIONS)))
    return total // CONNECTIONS * CONNECTIONS / (time.perf_counter() - t0)


async def fresh_connections(port: int, path: str, total: int) -> float:
    """Requests per second: `total` GETs, each on a connection of its own, CONNECTIONS at a time."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()

    async def worker(n: int) -> None:
        for _ in range(n):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await _exchange(reader, writer, request)
            finally:
                writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(total // CONNECTIONS) for _ in range(CONNECTIONS)))
    return total // CONNECTIONS * CONNECTIONS / (time.perf_counter() - t0)


MEASURES = {
    "GET /livez, keep-alive": lambda port: keep_alive(port, "/livez", LIVEZ),
    "GET /v1/profiles (reaches LXD), keep-alive": lambda port: keep_alive(port, "/v1/profiles", LXD_GETS),
    "GET /livez, a new connection each": lambda port: fresh_connections(port, "/livez", FRESH),
}


REQUESTS = {"GET /livez, keep-alive": LIVEZ, "GET /v1/profiles (reaches LXD), keep-alive": LXD_GETS,
            "GET /livez, a new connection each": FRESH}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(variant: str) -> None:
    """The gateway as `python -m app` serves it, with the HTTP protocol of `variant` (a key of SERVERS)."""
    from app.logs import configure_logging
    from app.serving import serve as serve_gateway
    from app.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    parser, guarded = SERVERS[variant]
    serve_gateway(settings, parser, guarded=guarded)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.listener")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    ensure_installed()
    daemon = LocalDaemon()
    data = Path(tempfile.mkdtemp(prefix="lxd-gateway-bench-"))
    servers: dict[str, GatewayProcess] = {}
    try:
        daemon.start()
        for i, name in enumerate(SERVERS):
            env = gateway_env(str(daemon.socket_path), data / str(i), free_port(), LXDGW_RATE_LIMIT="",
                              LXDGW_LOG_LEVEL="WARNING")
            servers[name] = start_gateway(env, log=data / f"{i}.log", ready_path="/readyz",
                                          module="bench.listener", args=("--serve", name))
        rates: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        names = list(SERVERS)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                for measure, run in MEASURES.items():
                    pid = servers[name].proc.pid
                    before = cpu_seconds(pid)
                    rate = asyncio.run(run(servers[name].port))
                    rates.setdefault((measure, name), []).append(rate)
                    cpu.setdefault((measure, name), []).append((cpu_seconds(pid) - before) / REQUESTS[measure])
        print(f"\nMedians of {args.rounds} rounds, {CONNECTIONS} client connections; the gateway's CPU time per "
              "request (user + system) is steadier than the rate on a shared machine:\n")
        print("| measure | server | req/s | gateway CPU per request | CPU vs unguarded httptools |")
        print("|---|---|---:|---:|---:|")
        for measure in MEASURES:
            base = statistics.median(cpu[(measure, BASELINE)])
            for name in SERVERS:
                used = statistics.median(cpu[(measure, name)])
                print(f"| {measure} | {name} | {statistics.median(rates[(measure, name)]):.0f} | "
                      f"{used * 1e6:.0f} µs | {used / base:.2f}x |")
        return 0
    finally:
        for gw in servers.values():
            gw.stop()
        daemon.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
