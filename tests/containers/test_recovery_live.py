"""A gateway killed with SIGKILL during a container create, started again, settles the job from the state of the
container within a minute: succeeded with the container running, or rolled back (no container) and failed."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo
from tests.containers.support import IMAGE, free_port, remove_all, start_gateway, stop_gateway, unique


def test_sigkill_during_create_then_restart_settles_the_job(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    prefix = unique("trc")
    data_dir, log = tmp_path / "data", tmp_path / "gateway.log"
    port = free_port()
    proc = start_gateway(lxd_daemon, data_dir, port, log)
    base = f"http://127.0.0.1:{port}"
    names = [f"{prefix}-a", f"{prefix}-b"]
    try:
        earlier = httpx.post(f"{base}/v1/containers/{prefix}-none/exec", json={"command": ["true"]}, timeout=30)
        assert earlier.status_code == 404
        jobs = []
        for name in names:
            r = httpx.post(f"{base}/v1/containers", json={"name": name, "image": IMAGE}, timeout=30)
            assert r.status_code == 202, r.text
            jobs.append(r.json())
        # kill as soon as the first create is under way
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/v1/jobs/{jobs[0]['id']}", timeout=10).json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    try:
        t0 = time.monotonic()
        port = free_port()
        proc = start_gateway(lxd_daemon, data_dir, port, log)
        base = f"http://127.0.0.1:{port}"
        settled = [httpx.get(f"{base}/v1/jobs/{j['id']}", params={"wait": 60}, timeout=70).json() for j in jobs]
        assert time.monotonic() - t0 < 60
        print("settled after restart:", [(j["status"], (j["error"] or {}).get("type")) for j in settled])
        for job, name in zip(settled, names, strict=True):
            assert job["status"] in ("succeeded", "failed"), job
            r = httpx.get(f"{base}/v1/containers/{name}", timeout=30)
            if job["status"] == "succeeded":
                assert r.status_code == 200 and r.json()["status"] == "Running", (job, r.text)
            else:
                assert job["error"]["type"].endswith("/rolled-back") and job["error"]["detail"], job
                assert r.status_code == 404, (job, r.text)
        listed = {j["id"] for j in httpx.get(f"{base}/v1/jobs", timeout=10).json()["items"]}
        assert {j["id"] for j in jobs} <= listed
    finally:
        stop_gateway(proc)
        asyncio.run(remove_all(lxd_daemon.socket_path, prefix))
