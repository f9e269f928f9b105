"""Helpers of the container API tests: unique names, LXD call counting, cleanup, a gateway process on loopback."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from app.lxd.errors import NotFound
from tests.support.gateway import GatewayProcess, gateway_env
from tests.support.gateway import start_gateway as start

ROOT = Path(__file__).resolve().parents[2]
IMAGE = {"alias": "busybox"}


def unique(prefix: str = "ct") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def remove_all(socket_path: str, prefix: str) -> None:
    """Force-remove every container whose name starts with `prefix`."""
    async with Client.unix(socket_path) as lxd:
        for name in await lxd.instances.names():
            if name.startswith(prefix):
                with suppress(Exception):  # stopped already
                    await lxd.instances.set_state(name, "stop", force=True)
                with suppress(NotFound):
                    await lxd.instances.delete(name)


@dataclass
class CallLog:
    """Every request the gateway sent to LXD while installed (method, path); events streams opened (or tried)
    apart, as (monotonic time, the `project` asked for)."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    events: list[tuple[float, str | None]] = field(default_factory=list)

    def events_since(self, t: float) -> list[str | None]:
        return [project for at, project in self.events if at >= t]

    @property
    def mutating(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] not in ("GET", "WS")]


@asynccontextmanager
async def counting(client: Client) -> AsyncIterator[CallLog]:
    """Count what reaches LXD through `client`'s transport (shared by its per-project clients)."""
    log = CallLog()
    t = client.transport
    orig = (t.request, t.stream, t.websocket)

    async def request(method: str, path: str, **kw: Any) -> Any:
        log.calls.append((method, path))
        return await orig[0](method, path, **kw)

    def stream(method: str, path: str, **kw: Any) -> Any:
        log.calls.append((method, path))
        return orig[1](method, path, **kw)

    async def websocket(path: str, params: Any = None, **kw: Any) -> Any:
        if path != "/1.0/events":
            log.calls.append(("WS", path))
        else:
            log.events.append((time.monotonic(), (params or {}).get("project")))
        return await orig[2](path, params, **kw)

    t.request, t.stream, t.websocket = request, stream, websocket  # type: ignore[method-assign]
    try:
        yield log
    finally:
        t.request, t.stream, t.websocket = orig  # type: ignore[method-assign]


async def create(c: httpx.AsyncClient, name: str, **extra: Any) -> dict[str, Any]:
    r = await c.post("/v1/containers", json={"name": name, "image": IMAGE, **extra}, params={"wait": 120})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "succeeded", job
    return job


async def job_ends(c: httpx.AsyncClient, r: httpx.Response, wait: int = 120) -> dict[str, Any]:
    assert r.status_code in (200, 202), r.text
    job = r.json()
    if job["status"] in ("queued", "running"):
        job = (await c.get(f"/v1/jobs/{job['id']}", params={"wait": wait})).json()
    return job


def start_gateway(daemon: DaemonInfo, data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`python -m app` (as `make run` starts it) on a loopback port; returns once `/livez` answers."""
    env = gateway_env(daemon.socket_path, data_dir, port, LXDGW_SHUTDOWN_GRACE_SECONDS="1", LXDGW_IMAGE_SOURCES="[]")
    return start(env, log=log).proc


def stop_gateway(proc: subprocess.Popen[bytes]) -> None:
    GatewayProcess(proc, 0, Path()).stop(15)



def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


async def poll(predicate: Any, timeout: float = 20.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
