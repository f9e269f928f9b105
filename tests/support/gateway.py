"""A real gateway process (`python -m app`, as `make run` starts it) on a loopback port, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.locallxd.daemon import free_port

ROOT = Path(__file__).resolve().parents[2]


def gateway_env(socket_path: str, data_dir: Path, port: int, *, auth: bool = False,
                **extra: str) -> dict[str, str]:
    """The environment of a gateway on `port` serving the LXD at `socket_path` as its default remote `local`.

    Inherited `LXDGW_*` variables are dropped so the caller's shell cannot change what is tested; `extra` adds or
    overrides settings by their variable names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
    env.update({
        "LXDGW_REMOTES": json.dumps([{"name": "local", "url": f"unix://{socket_path}", "default": True}]),
        "LXDGW_DATA_DIR": str(data_dir), "LXDGW_BIND": f"127.0.0.1:{port}",
        "LXDGW_AUTH_ENABLED": "true" if auth else "false",
    })
    env.update(extra)
    return env


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] | None = None
    """What it was started with (`restarted()` starts it again so)."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restarted(self, timeout: float = 30.0) -> GatewayProcess:
        """Stop it gracefully (SIGTERM, wait for the exit), then start it again on the same port, with the same
        environment and log; returns the new process."""
        assert self.env is not None, "started without its environment"
        self.stop(timeout)
        return start_gateway(self.env, log=self.log)

    def kill(self) -> None:
        """SIGKILL: the gateway dies mid-work, as in a crash."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)


def start_gateway(env: dict[str, str], *, log: Path, ready_path: str = "/livez", timeout: float = 30.0,
                  module: str = "app", args: tuple[str, ...] = ("serve",)) -> GatewayProcess:
    """Start `python -m app serve` with `env` (which names the port in LXDGW_BIND); return once `ready_path`
    answers 200.

    `module` and `args` start another entry point instead (a benchmark's variant of the server)."""
    port = int(env["LXDGW_BIND"].rpartition(":")[2])
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    gateway = GatewayProcess(proc, port, log, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}: {gateway.output()[-2000:]}")
        try:
            if httpx.get(f"{gateway.base}{ready_path}", timeout=2).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    gateway.kill()
    raise RuntimeError(f"the gateway did not answer {ready_path} within {timeout:g}s: {gateway.output()[-2000:]}")


@contextlib.contextmanager
def running_gateway(socket_path: str, data_dir: Path, *, auth: bool = False, ready_path: str = "/livez",
                    **extra: str) -> Iterator[GatewayProcess]:
    """A gateway on a free loopback port for the duration of the block, stopped gracefully afterwards."""
    env = gateway_env(socket_path, data_dir, free_port(), auth=auth, **extra)
    gateway = start_gateway(env, log=data_dir / "gateway.log", ready_path=ready_path)
    try:
        yield gateway
    finally:
        gateway.stop()


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """An ASGI app whose lifespan already runs, served by uvicorn on a free loopback port; yields `host:port`.

    For tests that need a real socket (websockets, SSE) while driving the app in-process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                           ws="websockets-sansio"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
