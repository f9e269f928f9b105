"""`python -m app.locallxd`: bring up or tear down the local LXD that `make run` uses when none is installed.

    python -m app.locallxd ensure-local [--dir .lxd]   # prints the unix socket to use
    python -m app.locallxd stop-local [--dir .lxd]
    python -m app.locallxd cleanup                     # remove what killed test runs left behind
    python -m app.locallxd backend-of SOCKET           # "LXD" or "Incus": what answers on a socket
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.locallxd.daemon import (
    HarnessError,
    LocalDaemon,
    backend_title_of,
    cleanup_stale,
    ensure_installed,
    image_tarball,
    leftovers_of_finished_runs,
    log,
)
from app.lxd.discovery import discover_socket, is_socket, socket_candidates


def ensure_local(directory: Path) -> str:
    """The socket of a running LXD: the machine's own when there is one, else a local daemon in `directory`."""
    if not os.environ.get("LXDGW_REMOTES"):
        for path in socket_candidates(env=os.environ):
            if is_socket(path) and not str(Path(path).resolve()).startswith(str(directory.resolve())):
                return discover_socket(env=os.environ)
    daemon = LocalDaemon(directory, persistent=True)
    if daemon.is_running():
        return str(daemon.socket_path)
    ensure_installed()
    daemon.stop()  # clears what a killed earlier run of this directory left
    directory.mkdir(parents=True, exist_ok=True)
    log(f"no LXD found: starting a local one in {directory} (kept for the next run)")
    daemon.start()
    daemon.state.owner_pid = daemon.state.daemon_pid or os.getpid()
    daemon.state.save(daemon.dir)
    daemon.prepare(image_tarball=image_tarball(), https=False)
    return str(daemon.socket_path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.locallxd")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("ensure-local", "stop-local"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, default=Path(".lxd"))
    sub.add_parser("cleanup")
    sub.add_parser("backend-of", help="print LXD or Incus: what answers on a unix socket").add_argument("socket")
    sub.add_parser("check-clean", help="fail when a finished run left a daemon, mount, bridge or directory")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "ensure-local":
            print(ensure_local(args.dir))
        elif args.cmd == "stop-local":
            LocalDaemon(args.dir, persistent=True).stop()
        elif args.cmd == "backend-of":
            print(backend_title_of(args.socket))
        elif args.cmd == "check-clean":
            leftovers = leftovers_of_finished_runs()
            if leftovers:
                print("lxd-harness: left behind by a finished run: " + "; ".join(leftovers), file=sys.stderr)
                return 1
            print("lxd-harness: nothing left behind (no daemon, mount, bridge or directory)")
        else:
            cleanup_stale()
    except HarnessError as exc:
        print(f"lxd-harness: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
