"""A private 3-member LXD cluster on loopback addresses, for tests.

Each member is a `LocalDaemon` of its own (its own LXD_DIR under the `lxdgw-` prefix, its own `harness.json`), so
`cleanup_stale()` and `check-clean` treat a member that a killed run left behind like any other daemon. The members
listen on `127.A.B.1`, `127.A.B.2`, `127.A.B.3`, on one free port (A, B and the port random; the whole of 127/8
is on `lo`, so no interface is added): m1 bootstraps the cluster, m2 and m3 join it with a join token. Every member
gets a `dir` pool `default`, the default profile a root disk on it, and m1 imports the busybox image (alias
`busybox`); the others fetch it from m1 when a container is placed on them. There is no managed network: a bridge
cannot work when every member shares one network namespace, so containers have no NIC.

The cluster trusts one client certificate of ours; its server certificate (the cluster certificate, the same on
every member) does not name the loopback addresses, so clients pin it as the only CA without a hostname check.

`stop()` deletes the instances, sends SIGTERM to every member at once and SIGKILL after a few seconds (the last
member has no quorum and would retry dqlite for about 20 s), then removes every process, mount and directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from app.locallxd.certs import write_client_certificate
from app.locallxd.daemon import (
    DEAD_PROXY,
    DIR_PREFIX,
    LXD,
    HarnessError,
    LocalDaemon,
    LXDApi,
    _pid_alive,
    free_port,
    kill_processes_of,
    log,
    remove_lock_dir,
    unmount_under,
)

STOP_GRACE = 3.0  # SIGTERM, then SIGKILL after this many seconds


class ClusterMemberDaemon(LocalDaemon):
    """One member: a private LXD that never reaches outside this machine (its instance-type lookup at start-up
    goes to a proxy that refuses at once; cluster traffic on 127/8 does not use the proxy)."""

    def __init__(self, name: str, address: str) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}cluster-{name}-")), backend=LXD)
        self.name = name
        self.address = address

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env.update(https_proxy=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY,
                   no_proxy="127.0.0.0/8,localhost", NO_PROXY="127.0.0.0/8,localhost",
                   LXD_CONF=str(self.dir / "lxc-conf"))
        return env

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def spawn(self) -> None:
        """Start the daemon process without waiting for it (`wait_ready` waits)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)
        self.state.save(self.dir)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(list(self.backend.daemon), env=self._env(), stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.state.daemon_pid = self.proc.pid
        self.state.save(self.dir)

    def wait_ready(self, timeout: float = 60.0) -> None:
        r = subprocess.run([*self.backend.cli, "waitready", f"--timeout={int(timeout)}"], env=self._env(),
                           check=False, capture_output=True, text=True)
        if r.returncode != 0 or (self.proc is not None and self.proc.poll() is not None):
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise HarnessError(f"cluster member {self.name} did not become ready in {self.dir}: "
                               f"{r.stderr.strip()}\n{tail}")

    def run(self, *args: str, stdin: str | None = None) -> str:
        r = subprocess.run(list(args), env=self._env(), input=stdin, check=False, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise HarnessError(f"{self.name}: {' '.join(args)} failed: {(r.stderr or r.stdout).strip()[-1500:]}")
        return r.stdout

    def api(self) -> LXDApi:
        return LXDApi(self.socket_path)

    def kill(self) -> None:
        """SIGKILL the daemon alone (its containers' monitors live on, as when a real member crashes)."""
        pid = self.state.daemon_pid
        if pid and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def restart(self, timeout: float = 60.0) -> None:
        """Start the member's daemon again on its directory: it rejoins the cluster by itself."""
        self.spawn()
        self.wait_ready(timeout)

    def teardown(self) -> None:
        """Kill what is left of this member and remove its directory."""
        pid = self.state.daemon_pid
        if pid and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        kill_processes_of(self.dir)
        time.sleep(0.2)
        unmount_under(self.dir)
        remove_lock_dir(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            unmount_under(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class ClusterMemberInfo:
    name: str
    address: str  # host:port
    url: str  # https://host:port
    lxd_dir: str
    socket_path: str


@dataclass
class ClusterInfo:
    """What tests need to reach a prepared cluster."""

    members: list[ClusterMemberInfo]
    client_cert: str
    client_key: str
    server_cert: str  # the cluster certificate (PEM), to pin as the only CA
    server_fingerprint: str
    pool: str = "default"
    image_alias: str = "busybox"
    image_fingerprint: str = ""
    backend: str = "lxd"

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def member(self, name: str) -> ClusterMemberInfo:
        return next(m for m in self.members if m.name == name)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as LXD's listener: TIME_WAIT does not count
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_loopback_prefix(size: int, port: int) -> str:
    """`127.A.B`, A and B random, with `port` free on `127.A.B.1` .. `127.A.B.<size>`."""
    for _ in range(100):
        prefix = f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 1}"
        if all(_port_free(f"{prefix}.{i}", port) for i in range(1, size + 1)):
            return prefix
    raise HarnessError("no free loopback addresses found for a cluster")


class LocalCluster:
    """A private LXD cluster of `size` members (3 by default): `start()`, `prepare()`, `stop()`."""

    def __init__(self, size: int = 3) -> None:
        # Not LXD's usual 8443: a daemon elsewhere on this machine told to listen on all addresses (`[::]:8443`,
        # LXD's default listener) would find that port taken on 127/8.
        port = free_port()
        prefix = pick_loopback_prefix(size, port)
        self.members = [ClusterMemberDaemon(f"m{i}", f"{prefix}.{i}:{port}") for i in range(1, size + 1)]
        self.info: ClusterInfo | None = None

    def member(self, name: str) -> ClusterMemberDaemon:
        return next(m for m in self.members if m.name == name)

    def revive(self) -> list[str]:
        """Restart every member whose daemon is not running, wait until the cluster sees each Online; their names."""
        dead = [m for m in self.members if not _pid_alive(m.state.daemon_pid)]
        for m in dead:
            m.restart()
        for m in dead:
            self.wait_status(m.name, "Online")
        return [m.name for m in dead]

    @property
    def first(self) -> ClusterMemberDaemon:
        return self.members[0]

    def start(self, *, image_tarball: Path, timeout: float = 60.0) -> ClusterInfo:
        """Start every daemon, bootstrap the cluster on m1, join the others, prepare storage, image and trust."""
        t0 = time.monotonic()
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_ready(timeout)
        first = self.first
        first.run("lxd", "init", "--preseed", stdin=json.dumps({
            "config": {"core.https_address": first.address, "cluster.https_address": first.address},
            "cluster": {"server_name": first.name, "enabled": True}}))
        for m in self.members[1:]:
            token = first.run("lxc", "cluster", "add", m.name, "--quiet").strip()
            m.run("lxd", "init", "--preseed", stdin=json.dumps({
                "config": {"core.https_address": m.address},
                "cluster": {"enabled": True, "server_name": m.name, "server_address": m.address,
                            "cluster_token": token}}))
        info = self._prepare(image_tarball)
        log(f"cluster of {len(self.members)} members on {first.address.rsplit('.', 1)[0]}.x up in "
            f"{time.monotonic() - t0:.1f}s")
        return info

    def _prepare(self, tarball: Path) -> ClusterInfo:
        first = self.first
        api = first.api()
        try:
            for m in self.members:
                api.request("POST", "/1.0/storage-pools", params={"target": m.name},
                            json={"name": "default", "driver": "dir", "config": {}})
            api.request("POST", "/1.0/storage-pools", json={"name": "default", "driver": "dir", "config": {}})
            api.request("PUT", "/1.0/profiles/default", json={
                "config": {}, "description": "Default LXD profile",
                "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
            fingerprint = LocalDaemon._import_image(api, tarball, public=False)
            client_cert, client_key = write_client_certificate(first.dir / "client.crt", first.dir / "client.key")
            der_b64 = "".join(Path(client_cert).read_text().strip().splitlines()[1:-1])
            api.request("POST", "/1.0/certificates", json={"type": "client", "name": "harness",
                                                            "certificate": der_b64})
            env = api.request("GET", "/1.0")["environment"]
        finally:
            api.close()
        server_cert = first.dir / "cluster-server.crt"
        server_cert.write_text(env["certificate"])
        self.info = ClusterInfo(
            members=[ClusterMemberInfo(m.name, m.address, m.url, str(m.dir), str(m.socket_path))
                     for m in self.members],
            client_cert=client_cert, client_key=client_key, server_cert=str(server_cert),
            server_fingerprint=env["certificate_fingerprint"], image_fingerprint=fingerprint)
        (first.dir / "cluster.json").write_text(json.dumps(asdict(self.info), indent=2))
        return self.info

    def wait_status(self, name: str, status: str, timeout: float = 40.0) -> float:
        """Wait until a live member reports member `name` at `status` (Online, Offline); the seconds it took."""
        t0 = time.monotonic()
        while True:
            for m in self.members:
                if m.name == name or not _pid_alive(m.state.daemon_pid):
                    continue
                with contextlib.suppress(HarnessError, httpx.HTTPError, OSError, KeyError, TypeError):
                    api = m.api()
                    try:
                        if api.request("GET", f"/1.0/cluster/members/{name}")["status"] == status:
                            return time.monotonic() - t0
                    finally:
                        api.close()
                break
            if time.monotonic() - t0 > timeout:
                raise HarnessError(f"cluster member {name} not {status} within {timeout:g}s")
            time.sleep(0.3)

    def _delete_instances(self) -> None:
        for m in self.members:
            if not _pid_alive(m.state.daemon_pid):
                continue
            with contextlib.suppress(Exception):
                api = m.api()
                try:
                    api._client.timeout = httpx.Timeout(15.0)
                    for inst in api.request("GET", "/1.0/instances", params={"recursion": 1,
                                                                               "all-projects": "true"}) or []:
                        params = {"project": inst.get("project", "default")}
                        with contextlib.suppress(Exception):
                            api.request("PUT", f"/1.0/instances/{inst['name']}/state", params=params,
                                        json={"action": "stop", "force": True})
                        with contextlib.suppress(Exception):
                            api.request("DELETE", f"/1.0/instances/{inst['name']}", params=params)
                finally:
                    api.close()
                return

    def stop(self) -> None:
        """Delete the instances, stop every member together, remove every trace."""
        t0 = time.monotonic()
        self._delete_instances()
        for m in self.members:
            if m.state.daemon_pid and _pid_alive(m.state.daemon_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.state.daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(_pid_alive(m.state.daemon_pid) for m in self.members):
            time.sleep(0.1)
        for m in self.members:
            try:
                m.teardown()
            except Exception as exc:  # teardown must go on for the other members
                log(f"teardown of cluster member {m.dir} failed: {exc}")
        log(f"cluster stopped and removed in {time.monotonic() - t0:.1f}s")
