"""Two gateway processes (`python -m app`) on one PostgreSQL database share their tokens and tickets: a token of one
process's tokens file is imported for both; the CLI writes to the database while they run; a ticket issued by one
opens a stream once on the other; a token revoked by the CLI is refused by both and its open stream on the other
process ends within a second."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo
from app.store.tokens import Scope, TokenStore
from tests.support.gateway import ROOT, running_gateway

EXTENSION = '["tests.jobs.extension_sleep"]'
BOUND = 1.0
"""Staleness promised: a revocation reaches every process, and ends its streams, within a second."""
MARGIN = 2.0
"""What the assertions allow on a loaded machine (the measured figures are printed)."""


def _cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
    env.update({"LXDGW_DATABASE_URL": database_url, "LXDGW_DATA_DIR": str(data_dir)})
    return subprocess.run([sys.executable, "-m", "app", "tokens", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _refused_after(c: httpx.AsyncClient, base: str, secret: str, since: float) -> float:
    while (await c.get(f"{base}/v1/whoami", headers=_bearer(secret))).status_code != 401:
        assert time.monotonic() - since < MARGIN, f"{base} still accepts a revoked token"
        await asyncio.sleep(0.01)
    return time.monotonic() - since


async def test_tokens_and_tickets_are_shared_by_two_gateway_processes(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                                      postgres_url: str) -> None:
    _, boot = TokenStore(tmp_path / "a" / "tokens.json").create("boot", [Scope.read])
    settings = {"LXDGW_DATABASE_URL": postgres_url, "LXDGW_EXTENSIONS": EXTENSION, "LXDGW_RATE_LIMIT": "",
                "LXDGW_SHUTDOWN_GRACE_SECONDS": "1"}
    with running_gateway(lxd_daemon.socket_path, tmp_path / "a", auth=True, **settings) as a, \
            running_gateway(lxd_daemon.socket_path, tmp_path / "b", auth=True, **settings) as b:
        created = await asyncio.to_thread(_cli, postgres_url, tmp_path / "cli", "create", "ops", "--scope", "write")
        assert created.returncode == 0, created.stderr
        ops = created.stdout.strip()
        root = (await asyncio.to_thread(_cli, postgres_url, tmp_path / "cli", "create", "root", "--scope",
                                        "admin")).stdout.strip()
        async with httpx.AsyncClient(timeout=30) as c:
            for gateway in (a, b):
                # imported from a's tokens file, once, for every process
                assert (await c.get(f"{gateway.base}/v1/whoami", headers=_bearer(boot))).json()["name"] == "boot"
                deadline = time.monotonic() + MARGIN
                while (await c.get(f"{gateway.base}/v1/whoami", headers=_bearer(ops))).status_code != 200:
                    assert time.monotonic() < deadline, "a token made by the CLI is not accepted"
                    await asyncio.sleep(0.01)
            listed = (await asyncio.to_thread(_cli, postgres_url, tmp_path / "cli", "list")).stdout
            assert {"boot", "ops", "root"} <= {line.split('"name": "')[1].split('"')[0] for line in listed.splitlines()}

            r = await c.post(f"{b.base}/v1/test-jobs", json={"steps": 600, "interval": 1}, headers=_bearer(ops))
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            ticket = (await c.post(f"{a.base}/v1/tickets", headers=_bearer(ops))).json()["ticket"]
            opened, ended = asyncio.Event(), asyncio.Event()

            async def stream() -> None:
                async with c.stream("GET", f"{b.base}/v1/jobs/{job_id}/events", params={"ticket": ticket}) as resp:
                    assert resp.status_code == 200, await resp.aread()
                    async for line in resp.aiter_lines():
                        if line.startswith("event: "):
                            opened.set()
                ended.set()

            watcher = asyncio.create_task(stream())
            await asyncio.wait_for(opened.wait(), 10)  # the ticket of a opened a stream on b ...
            for gateway in (a, b):  # ... once
                again = await c.get(f"{gateway.base}/v1/jobs/{job_id}/events", params={"ticket": ticket})
                assert again.status_code == 401, again.text

            revoked = await asyncio.to_thread(_cli, postgres_url, tmp_path / "cli", "revoke", "ops")
            assert revoked.returncode == 0, revoked.stderr
            since = time.monotonic()
            on_b = await _refused_after(c, b.base, ops, since)
            on_a = await _refused_after(c, a.base, ops, since)
            await asyncio.wait_for(ended.wait(), MARGIN)
            stream_ended = time.monotonic() - since
            await watcher
            print(f"revoked by the CLI: refused by b after {on_b:.3f}s, by a after {on_a:.3f}s; "
                  f"b's stream ended after {stream_ended:.3f}s")
            assert stream_ended <= MARGIN
            assert (await c.delete(f"{b.base}/v1/jobs/{job_id}", headers=_bearer(root))).status_code in (200, 202)
