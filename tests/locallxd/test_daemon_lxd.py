"""The harness's daemons (LXD and Incus) are real and usable: raw httpx over the unix socket and over HTTPS."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo, backend_title_of

pytestmark = [pytest.mark.lxd, pytest.mark.backends()]  # the daemon tests run on LXD and on Incus


def _wait(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    assert body["type"] == "async", body
    done = client.get(f"{body['operation']}/wait", params={"timeout": 60}, timeout=70).json()
    assert done["type"] == "sync", done
    assert done["metadata"]["status_code"] == 200, done["metadata"]
    return done["metadata"]


def test_container_lifecycle_over_unix_socket(lxd_daemon: DaemonInfo) -> None:
    name = f"h-{uuid.uuid4().hex[:8]}"
    transport = httpx.HTTPTransport(uds=lxd_daemon.socket_path)
    with httpx.Client(transport=transport, base_url="http://lxd", timeout=30) as c:
        _wait(c, c.post("/1.0/instances", json={"name": name, "type": "container",
                                                "source": {"type": "image", "alias": "busybox"}}).json())
        _wait(c, c.put(f"/1.0/instances/{name}/state", json={"action": "start", "timeout": 30}).json())
        assert c.get(f"/1.0/instances/{name}/state").json()["metadata"]["status"] == "Running"
        op = _wait(c, c.post(f"/1.0/instances/{name}/exec", json={
            "command": ["echo", "hello"], "wait-for-websocket": False, "record-output": True,
            "interactive": False}).json())
        assert op["metadata"]["return"] == 0
        stdout_url = op["metadata"]["output"]["1"]
        assert c.get(stdout_url).text == "hello\n"
        _wait(c, c.put(f"/1.0/instances/{name}/state", json={"action": "stop", "timeout": 30}).json())
        assert c.get(f"/1.0/instances/{name}/state").json()["metadata"]["status"] == "Stopped"
        _wait(c, c.delete(f"/1.0/instances/{name}").json())
        assert c.get(f"/1.0/instances/{name}").status_code == 404


def test_the_daemon_is_the_backend_asked_for_and_says_so(lxd_daemon: DaemonInfo, image_server: DaemonInfo,
                                                          backend: str) -> None:
    assert lxd_daemon.backend == image_server.backend == backend
    assert backend_title_of(lxd_daemon.socket_path) == {"lxd": "LXD", "incus": "Incus"}[backend]
    with httpx.Client(transport=httpx.HTTPTransport(uds=lxd_daemon.socket_path), base_url="http://d") as c:
        info = c.get("/1.0").json()["metadata"]
    assert info["environment"]["server"] == backend
    if backend == "incus":  # Incus alone looks up image servers on a timer: the harness turns that off
        assert info["config"]["images.auto_update_interval"] == "0"


def test_https_listener_with_client_certificate(lxd_daemon: DaemonInfo) -> None:
    ctx = ssl.create_default_context(cafile=lxd_daemon.server_cert)
    ctx.check_hostname = False
    ctx.load_cert_chain(lxd_daemon.client_cert, lxd_daemon.client_key)
    with httpx.Client(base_url=lxd_daemon.https_url, verify=ctx, timeout=10) as c:
        info = c.get("/1.0").json()["metadata"]
        assert info["auth"] == "trusted"
        assert info["environment"]["certificate_fingerprint"] == lxd_daemon.server_fingerprint
    # Without the client certificate the same server treats us as untrusted.
    anon = ssl.create_default_context(cafile=lxd_daemon.server_cert)
    anon.check_hostname = False
    with httpx.Client(base_url=lxd_daemon.https_url, verify=anon, timeout=10) as c:
        assert c.get("/1.0").json()["metadata"]["auth"] == "untrusted"


def test_image_server_serves_public_image(image_server: DaemonInfo) -> None:
    ctx = ssl.create_default_context(cafile=image_server.server_cert)
    ctx.check_hostname = False
    with httpx.Client(base_url=image_server.https_url, verify=ctx, timeout=10) as c:
        images = c.get("/1.0/images").json()["metadata"]
        assert f"/1.0/images/{image_server.image_fingerprint}" in images


def test_a_daemon_that_dies_is_revived_with_its_log_kept(tmp_path: Path) -> None:
    import os
    import signal

    from app.locallxd.daemon import LocalDaemon, image_tarball
    from tests.support.lxd_env import HarnessEnvironment

    daemon = LocalDaemon()
    try:
        daemon.start()
        info = daemon.prepare(image_tarball=image_tarball(), https=False)
        env = HarnessEnvironment(main=info, image_server=info, daemons=[daemon])
        assert env.revive() == []
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        assert env.revive() == [str(daemon.dir)]
        with httpx.Client(transport=httpx.HTTPTransport(uds=info.socket_path), base_url="http://lxd") as c:
            aliases = c.get("/1.0/images/aliases").json()["metadata"]
        assert "/1.0/images/aliases/busybox" in aliases  # the same daemon, its state kept
        assert Path(f"test-artifacts/lxd-{daemon.dir.name}.log").exists()
    finally:
        daemon.stop()
        Path(f"test-artifacts/lxd-{daemon.dir.name}.log").unlink(missing_ok=True)


def test_a_killed_runs_daemon_is_found_by_check_clean_and_removed_by_cleanup(backend: str) -> None:
    """A run killed with its daemon still up: `check-clean` names the directory and the daemon (found by its
    LXD_DIR or INCUS_DIR: its command line does not name it), and `cleanup` removes both (only this directory
    here: a cleanup in the middle of a session would also take bridges other tests have made)."""
    import os
    import subprocess
    import sys

    from app.locallxd.daemon import destroy_dir, leftovers_of_finished_runs, stale_dirs

    script = ("import sys\nfrom app.locallxd.daemon import BACKENDS, LocalDaemon\n"
              f"d = LocalDaemon(backend=BACKENDS[{backend!r}])\nd.start()\n"
              "print(d.dir, flush=True)\nsys.stdin.read()\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert owner.stdout is not None
    directory = Path(owner.stdout.readline().strip())
    try:
        assert directory.is_dir()
        owner.kill()
        owner.wait(10)
        found = leftovers_of_finished_runs()
        assert f"directory {directory}" in found, found
        daemon = "incusd" if backend == "incus" else "lxd --group root"
        assert any(f.startswith("process ") and daemon in f for f in found), found
        assert directory in list(stale_dirs(directory.parent))
        destroy_dir(directory)  # what `cleanup` does with each stale directory
        assert not directory.exists()
        assert not any(f.startswith("process ") and daemon in f for f in leftovers_of_finished_runs())
    finally:
        owner.kill()
        if directory.exists():
            destroy_dir(directory)
