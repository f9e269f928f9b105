"""A private Docker engine for building and running the gateway's container image in tests.

Debian's `docker.io` runs as its own `dockerd` (own socket, data root, exec root, no iptables, no bridge) in a
harness directory; containers run with `--network host`. No image registry is reachable, so the base image
(`debian:bookworm-slim`) is made locally with `debootstrap --variant=minbase bookworm` and `docker import`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from app.locallxd.daemon import (
    DIR_PREFIX,
    HarnessError,
    HarnessState,
    destroy_dir,
    ensure_binary,
    log,
)

BASE_IMAGE = "debian:bookworm-slim"
CACHE = Path(tempfile.gettempdir()) / "lxd-gateway-image-cache"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] and "security" not in words[1]:
                    return words[1]
                if words[:1] == ["deb"] and len(words) > 1 and "security" not in line:
                    return next(w for w in words[1:] if "://" in w)
    raise HarnessError("no Debian mirror found in the apt sources")


def base_rootfs_tarball() -> Path:
    """A tarball of a minimal bookworm root filesystem, made once and cached."""
    out = CACHE / "bookworm-minbase.tar"
    if out.exists():
        return out
    ensure_binary("debootstrap", "debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lxd-gateway-rootfs-"))
    os.chmod(root, 0o755)  # becomes the image's "/": mkdtemp's 0700 would lock every non-root user out
    try:
        log("debootstrap --variant=minbase bookworm (once; cached)")
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()], check=True,
                       stdout=subprocess.DEVNULL)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True)
        tmp.replace(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


class PrivateDocker:
    """`dockerd` in its own directory; `run()` runs the docker CLI against it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX + "docker-"))
        self.state = HarnessState(owner_pid=os.getpid())
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.dir}/docker.sock"

    def start(self, timeout: float = 60.0) -> None:
        ensure_binary("dockerd", "docker.io")
        self.state.save(self.dir)
        logf = open(self.dir / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
        self.proc = subprocess.Popen(
            ["dockerd", "--host", self.host, "--data-root", str(self.dir / "data"), "--exec-root",
             str(self.dir / "exec"), "--pidfile", str(self.dir / "docker.pid"), "--iptables=false",
             "--ip6tables=false", "--bridge=none"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.state.daemon_pid = self.proc.pid
        self.state.save(self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.run("info", check=False).returncode == 0:
                return
            time.sleep(0.5)
        tail = (self.dir / "dockerd.log").read_text(errors="replace")[-2000:]
        raise HarnessError(f"dockerd did not start:\n{tail}")

    def run(self, *args: str, check: bool = True, timeout: float = 900,
            **kw: object) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["docker", "--host", self.host, *args], capture_output=True, text=True, timeout=timeout,
                           check=False, **kw)  # type: ignore[call-overload]
        if check and r.returncode != 0:
            raise HarnessError(f"docker {' '.join(args[:3])} failed: {r.stderr[-3000:]}")
        return r  # type: ignore[no-any-return]

    def import_base_image(self) -> None:
        if self.run("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return
        with open(base_rootfs_tarball(), "rb") as f:
            r = subprocess.run(["docker", "--host", self.host, "import", "-", BASE_IMAGE], stdin=f,
                               capture_output=True, text=True, timeout=600, check=False)
        if r.returncode != 0:
            raise HarnessError(f"docker import failed: {r.stderr}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            for cid in self.run("ps", "-aq", check=False, timeout=30).stdout.split():
                self.run("rm", "-f", cid, check=False, timeout=60)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        destroy_dir(self.dir)


@contextlib.contextmanager
def private_docker() -> Iterator[PrivateDocker]:
    docker = PrivateDocker()
    try:
        docker.start()
        yield docker
    finally:
        docker.stop()
