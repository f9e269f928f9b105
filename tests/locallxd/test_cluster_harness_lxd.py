"""The harness's LXD cluster starts (three members on loopback addresses, every one Online, a container runs on each)
and stops leaving nothing behind: no process, mount, lock directory, directory or listening address."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from app.locallxd.cluster import LocalCluster
from app.locallxd.daemon import LXC_LOCK_DIR, _daemon_dir_of, _processes, ensure_installed, image_tarball

pytestmark = pytest.mark.lxd


def _traces(dirs: list[str]) -> list[str]:
    found = [f"process {pid} ({cmd[:60]})" for pid, (_, cmd) in _processes().items()
             if any(d in cmd or _daemon_dir_of(pid) == d for d in dirs)]
    with open("/proc/self/mounts") as f:
        found += [f"mount {line.split()[1]}" for line in f if any(line.split()[1].startswith(d) for d in dirs)]
    found += [f"directory {d}" for d in dirs if Path(d).exists()]
    found += [f"lock {d}" for d in dirs if (LXC_LOCK_DIR / d.lstrip("/")).exists()]
    return found


def test_a_cluster_starts_and_stops_cleanly() -> None:
    ensure_installed()
    cluster = LocalCluster()
    t0 = time.monotonic()
    try:
        info = cluster.start(image_tarball=image_tarball())
        started = time.monotonic() - t0
        dirs = [m.lxd_dir for m in info.members]
        assert [m.name for m in info.members] == ["m1", "m2", "m3"]
        assert len({m.address.rsplit(".", 1)[0] for m in info.members}) == 1  # 127.A.B.1-3
        for m in cluster.members:
            assert cluster.wait_status(m.name, "Online", timeout=5) < 5
        first = cluster.first
        for m in cluster.members:
            first.run("lxc", "launch", "busybox", f"h-{m.name}", "--target", m.name, "--quiet")
        listed = first.run("lxc", "list", "--format", "csv", "-c", "nsL")
        assert sorted(listed.split()) == [f"h-{m},RUNNING,{m}" for m in ("m1", "m2", "m3")], listed
        assert first.run("lxc", "exec", "h-m3", "--", "hostname").strip() == "h-m3"
        assert _traces(dirs)  # the members are up: their processes and mounts are there
    finally:
        t1 = time.monotonic()
        cluster.stop()
        stopped = time.monotonic() - t1
    assert _traces(dirs) == []
    for m in info.members:  # nothing listens on the addresses any more (TIME_WAIT aside, as LXD binds)
        host, port = m.address.rsplit(":", 1)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
    assert started < 60 and stopped < 15, (started, stopped)
    print(f"\ncluster up in {started:.1f}s, stopped and removed in {stopped:.1f}s")


def test_a_killed_runs_cluster_is_found_by_check_clean_and_removed_by_cleanup() -> None:
    """A run killed with its cluster up: `check-clean` names each member's directory and daemon, and removing the
    stale directories (what `cleanup` does) takes the whole cluster down."""
    import os
    import subprocess
    import sys

    from app.locallxd.daemon import destroy_dir, leftovers_of_finished_runs, stale_dirs

    script = ("import sys\nfrom app.locallxd.cluster import LocalCluster\nfrom app.locallxd.daemon import "
              "image_tarball\nc = LocalCluster()\nc.start(image_tarball=image_tarball())\n"
              "print(' '.join(str(m.dir) for m in c.members), flush=True)\nsys.stdin.read()\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert owner.stdout is not None
    dirs = [Path(d) for d in owner.stdout.readline().split()]
    try:
        assert len(dirs) == 3 and all(d.is_dir() for d in dirs), dirs
        owner.kill()
        owner.wait(10)
        found = leftovers_of_finished_runs()
        for d in dirs:
            assert f"directory {d}" in found, found
            assert d in list(stale_dirs(d.parent))
        assert sum(f.startswith("process ") and "lxd --group root" in f for f in found) >= 3, found
        for d in dirs:
            destroy_dir(d)
        assert _traces([str(d) for d in dirs]) == []
    finally:
        owner.kill()
        for d in dirs:
            if d.exists():
                destroy_dir(d)
