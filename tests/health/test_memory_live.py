"""The resident memory of an idle gateway process (`python -m app`) in front of the private LXD, once it has
answered its first requests, as the benchmark measures it (no auth, no rate limit)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo
from tests.support.gateway import running_gateway

IDLE_LIMIT_MIB = 90
"""75-78 MiB measured here (Python 3.11, glibc, no bytecode cache written; 98-100 MiB before the process left out
what it never uses): the margin absorbs other machines and library versions, not a return to that."""
NOT_MAPPED = ("cryptography", "psycopg")
"""Native libraries of modules only some paths import (tests/test_footprint.py lists them all)."""


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_an_idle_gateway_stays_small(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    with running_gateway(str(lxd_daemon.socket_path), tmp_path / "data", ready_path="/readyz",
                         LXDGW_RATE_LIMIT="", LXDGW_MAX_JOBS_PER_TOKEN="0", LXDGW_LOG_LEVEL="WARNING") as gw:
        with httpx.Client(base_url=gw.base, timeout=30) as c:
            for _ in range(5):
                for path in ("/readyz", "/v1/containers", "/v1/server", "/v1/jobs"):
                    assert c.get(path).status_code == 200, path
        time.sleep(1.0)
        pid = gw.proc.pid
        idle_mib = status_kib(pid, "VmRSS") / 1024
        mapped = Path(f"/proc/{pid}/maps").read_text()
    print(f"idle gateway RSS {idle_mib:.1f} MiB")
    assert idle_mib < IDLE_LIMIT_MIB
    assert [name for name in NOT_MAPPED if f"/{name}" in mapped] == []
