"""Crash recovery with a real gateway process: SIGKILL mid-job, start again, the job is settled and history kept."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo
from tests.support.gateway import gateway_env
from tests.support.gateway import start_gateway as start

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(data_dir: Path, daemon: DaemonInfo, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = gateway_env(daemon.socket_path, data_dir, port, LXDGW_EXTENSIONS='["tests.jobs.extension_sleep"]',
                      LXDGW_SHUTDOWN_GRACE_SECONDS="1",
                      PYTHONPATH=str(ROOT))
    return start(env, log=log).proc


def test_sigkill_mid_job_then_restart_settles_it(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "gateway.log"
    port = free_port()
    proc = start_gateway(data_dir, lxd_daemon, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        earlier = [httpx.post(f"{base}/v1/test-jobs", json={"steps": 1, "interval": 0.01}, params={"wait": 10},
                              timeout=15).json() for _ in range(2)]
        assert all(j["status"] == "succeeded" for j in earlier)
        marker = tmp_path / "created"
        long_jobs = [httpx.post(f"{base}/v1/test-jobs", json={"steps": 200, "interval": 0.1, "marker": str(m)},
                                timeout=15).json() for m in (marker, tmp_path / "already-created")]
        (tmp_path / "already-created").write_text("the resource exists")  # as if the job had got that far
        deadline = time.monotonic() + 10
        while (httpx.get(f"{base}/v1/jobs/{long_jobs[0]['id']}").json()["progress"]["percent"] or 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    t0 = time.monotonic()
    port = free_port()
    proc = start_gateway(data_dir, lxd_daemon, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        settled = [httpx.get(f"{base}/v1/jobs/{j['id']}", params={"wait": 60}, timeout=70).json()
                   for j in long_jobs]
        assert time.monotonic() - t0 < 60
        assert settled[0]["status"] == "failed" and settled[0]["error"]["type"].endswith("/rolled-back")
        assert settled[1]["status"] == "succeeded" and settled[1]["result"] == {"recovered": True}
        listed = [j["id"] for j in httpx.get(f"{base}/v1/jobs").json()["items"]]
        assert listed == [j["id"] for j in long_jobs[::-1] + earlier[::-1]]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
