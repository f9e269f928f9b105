"""Build a tiny unified LXD image from Debian's busybox-static.

No image can be downloaded here, so the harness makes its own: `metadata.yaml` plus a `rootfs/` holding the
static busybox, every applet a *relative* symlink (absolute links point into the host and the container fails
to exec `/sbin/init`), an init that exits on SIGPWR/SIGTERM (LXD's clean shutdown) and a udhcpc script that
applies the lease (busybox ships none).
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import tarfile
import time
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

INIT = """#!/bin/sh
trap 'exit 0' PWR TERM INT
export PATH=/bin:/sbin
mkdir -p /tmp /run /var/run
ip link set lo up 2>/dev/null
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up 2>/dev/null
  udhcpc -i eth0 -s /etc/udhcpc.sh -b -t 5 -T 1 -q >/dev/null 2>&1 &
fi
while true; do sleep 1 & wait $!; done
"""

UDHCPC = """#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
    ;;
esac
exit 0
"""


def lxd_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({a.strip() for a in out.split() if a.strip() and a.strip() != "busybox"})


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)


def build_busybox_image(dest: Path, *, description: str = "busybox", pad_mb: int = 0) -> Path:
    """Write a unified image tarball (tar.gz) to `dest` and return it.

    `pad_mb` adds a file of random bytes to the rootfs, so copies of the image take a measurable while.
    """
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} is missing: install busybox-static")
    now = int(time.time())
    metadata = (
        f"architecture: {lxd_arch()}\n"
        f"creation_date: {now}\n"
        "properties:\n"
        f"  description: {description}\n"
        "  os: busybox\n"
        "  release: static\n"
    ).encode()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        _add_bytes(tar, "metadata.yaml", metadata)
        _add_dir(tar, "rootfs")
        for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var", "var/run", "usr",
                  "usr/bin", "usr/sbin", "home", "mnt"):
            _add_dir(tar, f"rootfs/{d}", 0o1777 if d == "tmp" else 0o755)
        tar.add(str(BUSYBOX), arcname="rootfs/bin/busybox")
        for applet in _applets():
            if applet in ("init",):
                continue
            _add_link(tar, f"rootfs/bin/{applet}", "busybox")
        _add_bytes(tar, "rootfs/sbin/init", INIT.encode(), 0o755)
        _add_bytes(tar, "rootfs/etc/udhcpc.sh", UDHCPC.encode(), 0o755)
        _add_bytes(tar, "rootfs/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        _add_bytes(tar, "rootfs/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        _add_bytes(tar, "rootfs/etc/hostname", b"busybox\n")
        if pad_mb > 0:
            info = tarfile.TarInfo("rootfs/padding.bin")
            info.size = pad_mb * 1024 * 1024
            info.mode = 0o644
            tar.addfile(info, _RandomReader(info.size))
    return dest


class _RandomReader(io.RawIOBase):
    """Incompressible bytes without holding them all in memory."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return os.urandom(n)
