"""The data directory under real faults: a full disk (a small tmpfs the test mounts and fills), a corrupt job
database, a second gateway on the same directory, a directory that is not one; and its file modes.

A real gateway process (`python -m app`) serves the shared private LXD.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo, free_port
from app.store.jobs import DB_NAME
from tests.support.gateway import ROOT, GatewayProcess, gateway_env, running_gateway, start_gateway

pytestmark = pytest.mark.lxd


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted afterwards whatever happens."""
    point = tmp_path / "disk"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        with open("/proc/self/mounts") as f:
            assert str(point) not in f.read(), "the tmpfs is still mounted"


def _fill(disk: Path) -> Path:
    """Write a file until the device is full; its path."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def _serve_python_m_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m app` to its end (it must not start serving)."""
    return subprocess.run([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def _one_clear_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _store_statuses(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        conn.close()


async def _agree(c: httpx.AsyncClient, db: Path) -> None:
    """Every job reads the same over HTTP as in the store."""
    stored = _store_statuses(db)
    assert stored
    for job_id, status in stored.items():
        r = await c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status, (job_id, r.json(), status)


async def test_a_full_disk_refuses_writes_with_507_and_keeps_the_store_consistent(
        small_disk: Path, tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    data = small_disk / "data"
    db = data / DB_NAME
    env = gateway_env(lxd_daemon.socket_path, data, free_port())
    gateway: GatewayProcess | None = start_gateway(env, log=tmp_path / "gateway.log")
    filler: Path | None = None
    name = f"full-{uuid.uuid4().hex[:8]}"
    try:
        assert gateway is not None
        async with httpx.AsyncClient(base_url=gateway.base, timeout=60) as c:
            r = await c.post("/v1/containers", params={"wait": 120},
                             json={"name": name, "image": {"alias": "busybox"}})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            # A job that is running when the disk fills up, and ends while it is full.
            r = await c.post(f"/v1/containers/{name}/exec", json={"command": ["sh", "-c", "sleep 3; echo done"]})
            assert r.status_code == 202, r.text
            running_id = r.json()["id"]
            deadline = time.monotonic() + 30  # running (stored so) before the disk fills up
            while (await c.get(f"/v1/jobs/{running_id}")).json()["status"] != "running":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            filler = _fill(small_disk)

            writes: list[Any] = []
            for i in range(20):
                writes.append(c.post("/v1/containers", json={"name": f"x{i}-{name}", "image": {"alias": "busybox"}}))
                writes.append(c.post(f"/v1/containers/{name}/exec", json={"command": ["true"]}))
                writes.append(c.post("/v1/tokens", json={"name": f"t{i}", "scopes": ["read"]}))
                writes.append(c.get("/v1/jobs"))
                writes.append(c.get(f"/v1/containers/{name}"))
            for _ in range(3):  # an upload is spooled to the data directory first
                writes.append(c.post("/v1/images/upload", content=os.urandom(32 << 20),
                                     headers={"Content-Type": "application/octet-stream"}))
            answers = await asyncio.gather(*writes, return_exceptions=True)
            resets = [a for a in answers if isinstance(a, BaseException)]
            assert not resets, resets[:3]  # every request got an answer
            for a in answers:
                assert isinstance(a, httpx.Response)
                if a.request.method == "GET":
                    assert a.status_code == 200, a.text  # reads still answer
                else:
                    assert a.status_code == 507, a.text
                    assert a.headers["content-type"] == "application/problem+json"
                    body = a.json()
                    assert body["type"].endswith("/storage-full") and str(data) in body["detail"], body

            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["store"]["writable"] is False, ready.text
            await asyncio.sleep(4)  # the exec has ended by now: its end cannot be stored yet
            job = (await c.get(f"/v1/jobs/{running_id}")).json()
            assert job["status"] == "running", job  # never ahead of the store
            await _agree(c, db)

            filler.unlink()
            filler = None
            job = (await c.get(f"/v1/jobs/{running_id}", params={"wait": 30})).json()
            assert job["status"] == "succeeded" and job["result"]["stdout"] == "done\n", job
            deadline = time.monotonic() + 20
            while (ready := await c.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                await asyncio.sleep(0.5)
            r = await c.post(f"/v1/containers/{name}/exec", params={"wait": 60}, json={"command": ["true"]})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            await _agree(c, db)
            r = await c.delete(f"/v1/containers/{name}", params={"wait": 60})
            assert r.status_code == 200, r.text

        gateway.stop()
        gateway = None
        filler = _fill(small_disk)
        line = _one_clear_line(_serve_python_m_app(env), str(data), "full")
        assert "free space" in line, line
    finally:
        if gateway is not None:
            gateway.stop()
        if filler is not None:
            filler.unlink()


def _env(tmp_path: Path, data: Path) -> dict[str, str]:
    return gateway_env("/nonexistent/lxd.socket", data, free_port())


def test_a_corrupt_job_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(os.urandom(8192))
    line = _one_clear_line(_serve_python_m_app(_env(tmp_path, data)), str(data / DB_NAME), "corrupt")
    assert "aside" in line, line


def test_a_second_gateway_on_the_same_data_directory_stops_with_one_line(
        tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    data = tmp_path / "data"
    with running_gateway(lxd_daemon.socket_path, data):
        line = _one_clear_line(_serve_python_m_app(gateway_env(lxd_daemon.socket_path, data, free_port())),
                               str(data), "another gateway process")
        assert "LXDGW_DATA_DIR" in line, line


def test_a_data_directory_that_is_a_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    _one_clear_line(_serve_python_m_app(_env(tmp_path, data)), str(data), "LXDGW_DATA_DIR")


def test_a_read_only_data_directory_stops_the_start_with_one_line(small_disk: Path, tmp_path: Path) -> None:
    data = small_disk / "data"
    data.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = _one_clear_line(_serve_python_m_app(_env(tmp_path, data)), str(data), "Read-only file system")
    assert "LXDGW_DATA_DIR" in line, line


def _modes(directory: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.rglob("*"):
        found[str(path.relative_to(directory))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_the_data_directory_is_private_even_when_it_existed_open(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    tokens = data / "tokens.json"
    tokens.write_text(json.dumps({"version": 1, "tokens": []}))
    os.chmod(tokens, 0o644)
    (data / "remotes").mkdir(mode=0o755)
    (data / "remotes" / "old.crt").write_text("x")
    os.chmod(data / "remotes" / "old.crt", 0o644)
    env = gateway_env(lxd_daemon.socket_path, data, free_port())
    gateway = start_gateway(env, log=tmp_path / "gateway.log")
    try:
        with httpx.Client(base_url=gateway.base, timeout=60) as c:  # a job, so the database and its WAL are used
            assert c.post("/v1/containers/none-such/start").status_code in (202, 404)
        modes = _modes(data)
        for extra in ("", "-wal", "-shm", ".lock"):
            assert DB_NAME + extra in modes, modes
        wrong = {p: oct(m) for p, m in modes.items()
                 if m != (0o700 if p == "." or (data / p).is_dir() else 0o600)}
        assert not wrong, wrong
    finally:
        gateway.stop()
    with contextlib.suppress(FileNotFoundError):
        assert stat.S_IMODE((data / DB_NAME).stat().st_mode) == 0o600
