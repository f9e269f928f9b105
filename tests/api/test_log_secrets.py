"""A real gateway process: its JSON logs carry request ids, never tokens or tickets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.core.tokens import Scope, TokenStore
from app.harness.daemon import DaemonInfo, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_access_and_app_logs_hold_no_secret(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    _, secret = TokenStore(tmp_path / "tokens.json").create("ops", [Scope.admin])
    port = free_port()
    env = {**os.environ, "LXDGW_BIND": f"127.0.0.1:{port}", "LXDGW_DATA_DIR": str(tmp_path),
           "LXDGW_REMOTES": json.dumps([{"name": "local", "url": f"unix://{lxd_daemon.socket_path}"}])}
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {secret}", "X-Request-ID": "leakcheck-1"}
        ticket = httpx.post(f"{base}/v1/tickets", headers=auth).json()["ticket"]
        assert httpx.get(f"{base}/v1/whoami", params={"ticket": ticket}).status_code == 200
        created = httpx.post(f"{base}/v1/tokens", headers=auth, json={"name": "ci", "scopes": ["read"]}).json()
        assert httpx.get(f"{base}/v1/whoami", headers={"Authorization": "Bearer wrong-" + secret}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "gateway.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "leakcheck-1" for line in lines), text[-2000:]
    assert any("whoami" in line.get("event", "") for line in lines), "the access log goes through the same pipeline"
    for value in (secret, ticket, created["token"]):
        assert value not in text


def test_job_log_lines_carry_the_job_id(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    from tests.api.test_jobs import EXTENSION, HERE

    port = free_port()
    env = {**os.environ, "LXDGW_BIND": f"127.0.0.1:{port}", "LXDGW_DATA_DIR": str(tmp_path),
           "LXDGW_AUTH_ENABLED": "false", "LXDGW_EXTENSIONS": json.dumps([EXTENSION]),
           "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "LXDGW_REMOTES": json.dumps([{"name": "local", "url": f"unix://{lxd_daemon.socket_path}"}])}
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        r = httpx.post(f"{base}/v1/test-jobs", params={"wait": 30}, headers={"X-Request-ID": "job-log-1"},
                       json={"steps": 1, "interval": 0.01, "fail": True}, timeout=40)
        job_id = r.json()["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    lines = [json.loads(x) for x in (tmp_path / "gateway.log").read_text().splitlines() if x.startswith("{")]
    job_lines = [x for x in lines if x.get("logger", "").startswith("app.jobs") and job_id in x.get("event", "")]
    assert len(job_lines) >= 2, lines[-10:]  # started, failed
    for line in job_lines:
        assert line["job_id"] == job_id and line["request_id"] == "job-log-1", line
