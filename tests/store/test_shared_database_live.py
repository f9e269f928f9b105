"""Two gateway processes (`python -m app`) on one PostgreSQL job database: both start (no lock refusal, unlike two on
one SQLite file: test_data_dir_faults_live.py), and each answers the jobs and idempotency keys of the other."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo
from tests.support.gateway import running_gateway

EXTENSION = '["tests.jobs.extension_sleep"]'


def test_two_gateway_processes_share_one_postgresql_database(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                             postgres_url: str) -> None:
    settings = {"LXDGW_DATABASE_URL": postgres_url, "LXDGW_EXTENSIONS": EXTENSION}
    with running_gateway(lxd_daemon.socket_path, tmp_path / "a", **settings) as a, \
            running_gateway(lxd_daemon.socket_path, tmp_path / "b", **settings) as b:
        for gateway in (a, b):
            ready = httpx.get(f"{gateway.base}/readyz", timeout=10).json()
            assert ready["store"] == {"writable": True, "error": None}
        headers = {"Idempotency-Key": "shared-key-1"}
        body = {"steps": 2, "interval": 0.05}
        first = httpx.post(f"{a.base}/v1/test-jobs", json=body, headers=headers, timeout=10)
        assert first.status_code == 202, first.text
        job_id = first.json()["id"]
        deadline = time.monotonic() + 15
        while (seen := httpx.get(f"{b.base}/v1/jobs/{job_id}", timeout=10)).json().get("status") != "succeeded":
            assert time.monotonic() < deadline, seen.text
            time.sleep(0.1)
        assert seen.json()["result"] == {"steps": 2}  # run by a, read by b from the shared store
        replay = httpx.post(f"{b.base}/v1/test-jobs", json=body, headers=headers, timeout=10)
        assert replay.status_code == 200 and replay.json()["id"] == job_id  # the first job, ended
        assert replay.headers.get("idempotent-replayed") == "true"
        listed = httpx.get(f"{b.base}/v1/jobs", params={"kind": "test.sleep"}, timeout=10).json()
        assert [j["id"] for j in listed["items"]] == [job_id]
    assert not (tmp_path / "a" / "jobs.sqlite3").exists() and not (tmp_path / "b" / "jobs.sqlite3").exists()
