"""`make run` on a machine with no LXD socket brings up a local LXD and serves a ready gateway."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from app.locallxd.daemon import free_port

pytestmark = pytest.mark.lxd

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_serves_ready_gateway_with_local_lxd(tmp_path: Path) -> None:
    lxd_dir = Path(tempfile.mkdtemp(prefix="lxdgw-run-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("LXD_SOCKET", "LXD_DIR", "LXDGW_REMOTES")}
    env.update(LXDGW_BIND=f"127.0.0.1:{port}", LXDGW_DATA_DIR=str(tmp_path / "data"), LXDGW_AUTH_ENABLED="false")
    log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["make", "-s", "run", f"LOCAL_LXD={lxd_dir}"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        output = (tmp_path / "make-run.log").read_text(errors="replace")
        assert ready is not None and ready.status_code == 200, output
        assert f"starting a local one in {lxd_dir}" in output
        assert f"using the LXD socket {lxd_dir}" in output  # names the backend that answered
        nope = httpx.get(f"http://127.0.0.1:{port}/v1/nope", timeout=5)
        assert nope.status_code == 404
        assert nope.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
    finally:
        with_pg = proc.pid
        try:
            os.killpg(with_pg, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(with_pg, signal.SIGKILL)
        log.close()
        subprocess.run([sys.executable, "-m", "app.locallxd", "stop-local", "--dir", str(lxd_dir)], cwd=ROOT,
                       check=False, timeout=60)
        shutil.rmtree(lxd_dir, ignore_errors=True)
