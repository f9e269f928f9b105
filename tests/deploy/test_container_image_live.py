"""The Dockerfile builds for real and the image serves the private LXD through the mounted socket."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo, free_port
from tests.support.docker import private_docker

ROOT = Path(__file__).resolve().parents[2]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _build_context(dest: Path) -> Path:
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "app", dest / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "extra-ca", dest / "extra-ca")
    if HOST_CA.exists():  # this machine's network inspects TLS with its own CA
        shutil.copy2(HOST_CA, dest / "extra-ca" / "host-bundle.crt")
    return dest


def test_image_builds_and_serves_the_private_lxd(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    with private_docker() as docker:
        docker.import_base_image()
        context = _build_context(tmp_path)
        docker.run("build", "--network", "host", "--build-arg", "LXD_GID=0", "-t", "lxd-gateway:test",
                   str(context), timeout=1200)
        user = docker.run("image", "inspect", "--format", "{{.Config.User}}", "lxd-gateway:test").stdout.strip()
        assert user and user not in ("0", "root")
        port = free_port()
        cid = docker.run(
            "run", "-d", "--network", "host", "-v", f"{lxd_daemon.socket_path}:/var/lib/lxd/unix.socket",
            "-e", f"LXDGW_BIND=127.0.0.1:{port}", "-e", "LXDGW_AUTH_ENABLED=false",
            "lxd-gateway:test").stdout.strip()
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        logs = docker.run("logs", cid, check=False).stderr
        assert ready is not None and ready.status_code == 200, logs
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/containers", timeout=30)
        assert listed.status_code == 200, listed.text
        assert isinstance(listed.json()["items"], list)
        health = docker.run("inspect", "--format", "{{json .Config.Healthcheck.Test}}", cid).stdout
        assert "/livez" in health
