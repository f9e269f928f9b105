"""Real gateway processes (`python -m app`): `WEB_CONCURRENCY=2` on PostgreSQL serves with two worker processes,
each a replica on the shared job database (a worker killed is started again); on SQLite it is refused. Behind a
trusted proxy, per-address limits count the address X-Forwarded-For names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from app.locallxd.daemon import DaemonInfo, free_port
from tests.support.gateway import ROOT, gateway_env, start_gateway

EXTENSION = '["tests.jobs.extension_sleep"]'


def test_several_workers_on_sqlite_are_refused(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    env = {**gateway_env(lxd_daemon.socket_path, tmp_path, free_port()), "WEB_CONCURRENCY": "2"}
    done = subprocess.run([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "refusing to start 2 worker processes" in done.stderr and "LXDGW_DATABASE_URL" in done.stderr


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _alive_replicas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT owner_id FROM replicas WHERE alive_until > %s", (time.time(),)).fetchall()
    return {r[0] for r in rows}


def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_two_workers_on_postgresql_are_two_replicas_that_serve_and_run_jobs(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                                           postgres_url: str) -> None:
    env = {**gateway_env(lxd_daemon.socket_path, tmp_path, free_port(), LXDGW_DATABASE_URL=postgres_url,
                         LXDGW_EXTENSIONS=EXTENSION, LXDGW_SHUTDOWN_GRACE_SECONDS="1"), "WEB_CONCURRENCY": "2"}
    gateway = start_gateway(env, log=tmp_path / "gateway.log")
    try:
        _until(lambda: len(_children(gateway.proc.pid)) == 2, 20, "two worker processes")
        _until(lambda: len(_alive_replicas(postgres_url)) == 2, 30, "two replicas with a heartbeat")
        ids = []
        with httpx.Client(base_url=gateway.base, timeout=10) as client:
            for _ in range(6):
                r = client.post("/v1/test-jobs", json={"steps": 2, "interval": 0.05},
                                headers={"Connection": "close"})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            for job_id in ids:
                _until(lambda j=job_id: client.get(f"/v1/jobs/{j}").json()["status"] == "succeeded", 20,
                       f"job {job_id} succeeds")
        with psycopg.connect(postgres_url) as conn:
            owners = {r[0] for r in conn.execute("SELECT owner_id FROM jobs").fetchall()}
        print(f"{len(ids)} jobs run by {len(owners)} of the 2 workers")
        assert owners <= _alive_replicas(postgres_url)

        victim = min(_children(gateway.proc.pid))
        os.kill(victim, signal.SIGKILL)
        _until(lambda: victim not in _children(gateway.proc.pid) and len(_children(gateway.proc.pid)) == 2, 20,
               "the killed worker is started again")
        _until(lambda: httpx.get(f"{gateway.base}/readyz", timeout=5).status_code == 200, 20, "still serving")
    finally:
        gateway.stop()
    assert gateway.proc.returncode == 0, gateway.output()[-2000:]


def test_behind_a_trusted_proxy_the_forwarded_address_is_limited(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    env = gateway_env(lxd_daemon.socket_path, tmp_path, free_port(), auth=True,
                      LXDGW_AUTH_FAILURE_RATE_LIMIT="2/minute", LXDGW_TRUSTED_PROXIES='["127.0.0.1"]')
    gateway = start_gateway(env, log=tmp_path / "gateway.log")
    try:
        def status(forwarded: str) -> int:
            return httpx.get(f"{gateway.base}/v1/whoami", headers={"X-Forwarded-For": forwarded},
                             timeout=10).status_code

        assert [status("198.51.100.1") for _ in range(3)] == [401, 401, 429]
        assert status("6.6.6.6, 198.51.100.1") == 429  # what a client writes left of the proxy's entry is ignored
        assert status("198.51.100.2") == 401  # another client behind the proxy has its own count
    finally:
        gateway.stop()
