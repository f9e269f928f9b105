"""Where the local LXD (or Incus) unix socket is.

Order: what the user named, then what is found. Named: an explicit path, `LXD_SOCKET`, `LXD_DIR/unix.socket`,
`INCUS_SOCKET`, `INCUS_DIR/unix.socket`. Found: the snap socket, the Debian LXD socket, then Incus's
(`/run/incus/unix.socket`, `/var/lib/incus/unix.socket`). So a user who sets `INCUS_SOCKET` or `INCUS_DIR` on a
host that also runs LXD gets Incus. The first that exists as a socket wins; when none does, the first candidate is
returned so the error names a real path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping

SNAP_SOCKET = "/var/snap/lxd/common/lxd/unix.socket"
DEBIAN_SOCKET = "/var/lib/lxd/unix.socket"
INCUS_RUN_SOCKET = "/run/incus/unix.socket"
INCUS_SOCKET = "/var/lib/incus/unix.socket"


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def socket_candidates(explicit: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    out: list[str] = []
    if explicit:
        out.append(explicit)
    if env.get("LXD_SOCKET"):
        out.append(env["LXD_SOCKET"])
    if env.get("LXD_DIR"):
        out.append(os.path.join(env["LXD_DIR"], "unix.socket"))
    if env.get("INCUS_SOCKET"):
        out.append(env["INCUS_SOCKET"])
    if env.get("INCUS_DIR"):
        out.append(os.path.join(env["INCUS_DIR"], "unix.socket"))
    out += [SNAP_SOCKET, DEBIAN_SOCKET, INCUS_RUN_SOCKET, INCUS_SOCKET]
    return out


def discover_socket(explicit: str | None = None, env: Mapping[str, str] | None = None,
                    exists: Callable[[str], bool] = is_socket) -> str:
    candidates = socket_candidates(explicit, env)
    for path in candidates:
        if exists(path):
            return path
    return candidates[0]
