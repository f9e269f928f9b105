"""Private LXD daemons for `make run` on a machine without LXD (and, through tests/support/lxd_env.py, for tests).

`LocalDaemon` starts `lxd --group root` in its own LXD_DIR, prepares a `dir` pool, a root disk and a NIC on a
unique non-NAT bridge in the default profile, the busybox image under alias `busybox`, and an HTTPS listener
on a free loopback port that trusts a client certificate of ours. `stop()` removes everything it made: the
daemon and every process it started, its mounts, its bridges and their firewall rules, and its directory.

Everything is named with the `lxdgw-` (directories) and `lgw` (bridges) prefixes, and every directory carries a
`harness.json` naming its owner process, so that `cleanup_stale()` can remove what a killed run left behind
without touching a run that is still alive.
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
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.locallxd.certs import write_client_certificate
from app.locallxd.image import build_busybox_image

DIR_PREFIX = "lxdgw-"
BRIDGE_PREFIX = "lgw"
STATE_FILE = "harness.json"
PACKAGES = ["lxd", "lxd-client", "busybox-static", "iptables", "dnsmasq-base", "iputils-ping"]
REQUIRED_BINARIES = {"lxd": "lxd", "busybox": "busybox-static", "iptables": "iptables", "dnsmasq": "dnsmasq-base",
                     "ping": "iputils-ping"}
INCUSD = "/usr/libexec/incus/incusd"
INCUS_PACKAGES = ["incus-base", "incus-client"]
BACKPORTS_SOURCE = Path("/etc/apt/sources.list.d/lxdgw-bookworm-backports.sources")


@dataclass(frozen=True)
class Backend:
    """How one daemon kind is run: its binary, its directory variable, its CLI (the REST API is the same)."""

    name: str  # "lxd" or "incus"
    daemon: tuple[str, ...]
    dir_env: str
    cli: tuple[str, ...]  # the admin commands `waitready` and `shutdown` hang off this
    header_prefix: str  # image upload headers: X-LXD-public / X-Incus-public
    log_name: str

    @property
    def title(self) -> str:
        return "Incus" if self.name == "incus" else "LXD"


LXD = Backend("lxd", ("lxd", "--group", "root"), "LXD_DIR", ("lxd",), "X-LXD-", "lxd.log")
# Incus: `incusd` is not on PATH; `waitready`/`shutdown` are `incus admin` subcommands.
INCUS = Backend("incus", (INCUSD, "--group", "root"), "INCUS_DIR", ("incus", "admin"), "X-Incus-", "incus.log")
BACKENDS = {"lxd": LXD, "incus": INCUS}


class HarnessError(RuntimeError):
    """The private daemon could not be prepared."""


def log(msg: str) -> None:
    print(f"[lxd-harness] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- install


def missing_packages() -> list[str]:
    missing = [pkg for binary, pkg in REQUIRED_BINARIES.items() if shutil.which(binary) is None]
    if not Path("/bin/busybox").exists() and "busybox-static" not in missing:
        missing.append("busybox-static")
    return sorted(set(missing))


def apt_install(packages: list[str]) -> None:
    """apt-get install, waiting for a concurrent apt to release its lock; `apt-get update` once if it fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "--no-install-recommends", *packages]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], env=env,
                       capture_output=True, check=False)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise HarnessError(f"apt-get install {' '.join(packages)} failed: {r.stderr.strip()[-1500:]}")


def ensure_installed() -> None:
    """Install LXD and its helpers with apt when any is missing (root on Debian only)."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessError(f"missing packages {missing} and cannot install them (need root on Debian)")
    log(f"installing {' '.join(PACKAGES)}")
    apt_install(PACKAGES)
    if missing_packages():
        raise HarnessError(f"still missing after install: {missing_packages()}")


def _has_backports_source() -> bool:
    for f in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        with contextlib.suppress(OSError):
            if f.suffix in ("", ".list", ".sources") and "bookworm-backports" in f.read_text():
                return True
    return False


def incus_missing() -> bool:
    return not Path(INCUSD).exists() or shutil.which("incus") is None


def ensure_incus_installed() -> None:
    """Install Incus 6.0 from Debian's bookworm-backports (adding that source once) when it is missing."""
    ensure_installed()  # busybox, dnsmasq, iptables: shared with LXD
    if not incus_missing():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessError("Incus is missing and cannot be installed (need root on Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _has_backports_source():
        log(f"adding bookworm-backports to apt's sources ({BACKPORTS_SOURCE})")
        BACKPORTS_SOURCE.write_text("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n"
                                    "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    log(f"installing {' '.join(INCUS_PACKAGES)} from bookworm-backports")
    r = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], env=env, capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise HarnessError(f"apt-get update failed: {r.stderr.strip()[-1500:]}")
    apt_install(["-t", "bookworm-backports", *INCUS_PACKAGES])
    if incus_missing():
        raise HarnessError(f"Incus still missing after installing {INCUS_PACKAGES}")


def ensure_backend_installed(backend: Backend) -> None:
    if backend.name == "incus":
        ensure_incus_installed()
    else:
        ensure_installed()


def ensure_binary(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first when it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessError(f"{binary} is missing and cannot be installed (need root on Debian)")
    apt_install([package])
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if not found:
        raise HarnessError(f"{binary} still missing after installing {package}")
    return found


# --------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) for every process we can see."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        procs[int(entry.name)] = (ppid, cmd)
    return procs


def _daemon_dir_of(pid: int) -> str:
    """The LXD_DIR or INCUS_DIR a process was started with ("" when none, or unreadable): the daemons' own command
    lines (`lxd --group root`, `incusd --group root`) do not name their directory."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    for var in env:
        name, _, value = var.partition(b"=")
        if name in (b"LXD_DIR", b"INCUS_DIR"):
            return value.decode(errors="replace")
    return ""


def kill_processes_of(directory: Path) -> None:
    """SIGKILL every process whose command line or daemon directory names `directory`, with all their
    descendants."""
    procs = _processes()
    needle = str(directory)
    spared = {os.getpid()}
    pid = os.getpid()
    while pid in procs and procs[pid][0] not in spared and procs[pid][0] > 1:  # our ancestors name it too
        pid = procs[pid][0]
        spared.add(pid)
    roots = {p for p, (_, cmd) in procs.items()
             if (needle in cmd or _daemon_dir_of(p) == needle) and p not in spared}
    victims = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in procs.items():
            if ppid in victims and pid not in victims and pid not in spared:
                victims.add(pid)
                changed = True
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def unmount_under(directory: Path) -> None:
    """Lazily unmount every mount point at or below `directory`, deepest first."""
    prefix = str(directory)
    for _ in range(3):
        mounts = []
        with open("/proc/self/mounts") as f:
            for line in f:
                point = line.split()[1].encode().decode("unicode_escape")
                if point == prefix or point.startswith(prefix + "/"):
                    mounts.append(point)
        if not mounts:
            return
        for point in sorted(set(mounts), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, stderr=subprocess.DEVNULL)


def delete_bridge(name: str) -> None:
    """Remove a bridge and every firewall rule LXD generated for it."""
    subprocess.run(["ip", "link", "del", name], check=False, stderr=subprocess.DEVNULL)
    markers = (f"generated for LXD network {name}", f"generated for Incus network {name}")  # LXD's, Incus's
    for save, cmd in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        if shutil.which(save) is None:
            continue
        out = subprocess.run([save], check=False, capture_output=True, text=True).stdout
        table = "filter"
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") and any(m in line for m in markers):
                args = ["-t", table, "-D", *_split_rule(line[3:])]
                subprocess.run([cmd, *args], check=False, stderr=subprocess.DEVNULL)
    if shutil.which("nft"):
        for nft_table in ("lxd", "incus"):  # LXD's table, Incus's table
            out = subprocess.run(["nft", "-a", "list", "table", "inet", nft_table], check=False,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                continue
            for line in out.stdout.splitlines():
                words = line.split()
                if words[:1] == ["chain"] and name in words[1]:
                    subprocess.run(["nft", "delete", "chain", "inet", nft_table, words[1]], check=False,
                                   stderr=subprocess.DEVNULL)


def _split_rule(rule: str) -> list[str]:
    import shlex

    return shlex.split(rule)


def bridges_with_prefix() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], check=False, capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(BRIDGE_PREFIX):
                names.append(name)
    return names


def used_subnets() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], check=False, capture_output=True, text=True).stdout
    nets = set()
    for line in out.splitlines():
        for word in line.split():
            if "/" in word and word[0].isdigit():
                nets.add(".".join(word.split("/")[0].split(".")[:3]))
    return nets


def pick_subnet() -> str:
    """A 10.<x>.<y>.1/24 that no interface uses yet."""
    used = used_subnets()
    for _ in range(200):
        prefix = f"10.{secrets.randbelow(200) + 30}.{secrets.randbelow(250) + 1}"
        if prefix not in used:
            return f"{prefix}.1/24"
    raise HarnessError("no free subnet found")


# --------------------------------------------------------------------------------------------- state


@dataclass
class HarnessState:
    owner_pid: int
    daemon_pid: int | None = None
    bridges: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> HarnessState | None:
        try:
            return cls(**json.loads((directory / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, directory: Path) -> None:
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(directory / STATE_FILE)


STATELESS_GRACE = 120.0  # a directory just made by a run that has not written its state yet is not stale


def _is_stale(d: Path) -> bool:
    state = HarnessState.load(d)
    if state is not None:
        return not _pid_alive(state.owner_pid)
    try:  # another harness's directory under the same prefix (the tests' private PostgreSQL) names its owner so
        return not _pid_alive(int((d / "owner.pid").read_text()))
    except (OSError, ValueError):
        pass
    try:
        return time.time() - d.stat().st_mtime > STATELESS_GRACE
    except OSError:
        return False


def stale_dirs(base: Path) -> Iterator[Path]:
    for d in base.glob(DIR_PREFIX + "*"):
        if d.is_dir() and _is_stale(d):
            yield d


def destroy_dir(directory: Path) -> None:
    """Tear down whatever lives in a harness directory, daemon or not, then remove it."""
    state = HarnessState.load(directory)
    if state and state.daemon_pid and _pid_alive(state.daemon_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.daemon_pid, signal.SIGKILL)
    kill_processes_of(directory)
    time.sleep(0.2)
    unmount_under(directory)
    for bridge in state.bridges if state else []:
        delete_bridge(bridge)
    remove_lock_dir(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():  # a busy mount: try once more
        unmount_under(directory)
        shutil.rmtree(directory, ignore_errors=True)


LXC_LOCK_DIR = Path("/run/lxc/lock")


def remove_lock_dir(directory: Path) -> None:
    """liblxc's lock directory for a daemon directory (LXD's and Incus's alike): /run/lxc/lock/<its path>."""
    lock = LXC_LOCK_DIR / str(directory).lstrip("/")
    shutil.rmtree(lock, ignore_errors=True)


def leftovers_of_finished_runs(base: Path | None = None) -> list[str]:
    """What runs whose owner process has ended left behind: directories, daemons, mounts, bridges."""
    base = base or Path(tempfile.gettempdir())
    found: list[str] = []
    live_dirs: list[str] = []
    live_bridges: set[str] = set()
    for d in base.glob(DIR_PREFIX + "*"):
        state = HarnessState.load(d)
        if not _is_stale(d):
            live_dirs.append(str(d))
            live_bridges.update(state.bridges if state else [])
        else:
            found.append(f"directory {d}")
    for pid, (_, cmd) in _processes().items():
        where = _daemon_dir_of(pid) if pid != os.getpid() else ""
        where = where if where.startswith(str(base / DIR_PREFIX)) else ""  # an LXD or Incus daemon of ours
        if (str(base / DIR_PREFIX) in cmd or where) and not any(ld in cmd or ld == where for ld in live_dirs) \
                and pid != os.getpid() and _pid_alive(pid):
            found.append(f"process {pid} ({cmd.strip()[:80]})")
    with open("/proc/self/mounts") as f:
        for line in f:
            point = line.split()[1]
            if point.startswith(str(base / DIR_PREFIX)) and not any(point.startswith(ld) for ld in live_dirs):
                found.append(f"mount {point}")
    found += [f"bridge {b}" for b in bridges_with_prefix() if b not in live_bridges]
    found += [f"firewall chain {c}" for c in firewall_chains_with_prefix() if not any(b in c for b in live_bridges)]
    return found


def firewall_chains_with_prefix() -> list[str]:
    """The nftables chains LXD (table `inet lxd`) or Incus (table `inet incus`) made for our bridges."""
    if shutil.which("nft") is None:
        return []
    chains = []
    for nft_table in ("lxd", "incus"):
        out = subprocess.run(["nft", "list", "table", "inet", nft_table], check=False, capture_output=True,
                             text=True)
        for line in out.stdout.splitlines() if out.returncode == 0 else []:
            words = line.split()
            if words[:1] == ["chain"] and BRIDGE_PREFIX in words[1]:
                chains.append(f"inet {nft_table} {words[1]}")
    return chains


def cleanup_stale(base: Path | None = None) -> None:
    """Remove what earlier runs that were killed left behind: daemons, mounts, bridges, rules, directories."""
    base = base or Path(tempfile.gettempdir())
    live_bridges: set[str] = set()
    for d in base.glob(DIR_PREFIX + "*"):
        state = HarnessState.load(d)
        if state and _pid_alive(state.owner_pid):
            live_bridges.update(state.bridges)
    for d in list(stale_dirs(base)):
        log(f"removing what a killed run left in {d}")
        destroy_dir(d)
    for bridge in bridges_with_prefix():
        if bridge not in live_bridges:
            log(f"removing stale bridge {bridge}")
            delete_bridge(bridge)


# --------------------------------------------------------------------------------------------- daemon


class LXDApi:
    """A minimal synchronous client for the harness's own set-up (not the product's client)."""

    def __init__(self, socket_path: Path) -> None:
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://lxd",
                                    timeout=httpx.Timeout(60.0))

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self._client.request(method, path, **kwargs)
        body = r.json()
        if body.get("type") == "error":
            raise HarnessError(f"{method} {path}: {body.get('error')}")
        if body.get("type") == "async":
            op = body["operation"]
            w = self._client.get(f"{op}/wait", params={"timeout": 120}, timeout=130).json()
            if w.get("type") == "error" or w["metadata"].get("status_code") != 200:
                raise HarnessError(f"{method} {path}: {w.get('error') or w['metadata'].get('err')}")
            return w["metadata"]
        return body.get("metadata")


@dataclass
class DaemonInfo:
    """What tests (and `make run`) need to reach a prepared daemon."""

    lxd_dir: str
    socket_path: str
    https_url: str
    https_port: int
    client_cert: str
    client_key: str
    server_cert: str
    server_fingerprint: str
    bridge: str
    subnet: str
    pool: str = "default"
    image_alias: str = "busybox"
    image_fingerprint: str = ""
    backend: str = "lxd"  # "lxd" or "incus"


OFFLINE_ENV = "LXDGW_LOCAL_LXD_OFFLINE"  # "1": the daemon reaches nothing outside this machine (the tests set it)
DEAD_PROXY = "http://127.0.0.1:9"


class LocalDaemon:
    """One private LXD (or Incus, with `backend=INCUS`) daemon in its own directory."""

    def __init__(self, directory: Path | None = None, *, persistent: bool = False,
                 backend: Backend = LXD) -> None:
        self.backend = backend
        if directory is None:
            prefix = DIR_PREFIX if backend is LXD else f"{DIR_PREFIX}{backend.name}-"
            directory = Path(tempfile.mkdtemp(prefix=prefix))
        self.dir = directory.resolve()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: DaemonInfo | None = None
        self.state = HarnessState(owner_pid=os.getpid())

    @property
    def socket_path(self) -> Path:
        return self.dir / "unix.socket"

    def _env(self) -> dict[str, str]:
        env = {**os.environ, self.backend.dir_env: str(self.dir)}
        if os.environ.get(OFFLINE_ENV) == "1":
            # The daemon fetches instance types from the internet at start; a proxy that refuses at once keeps
            # that lookup on this machine. Traffic to 127/8 does not use the proxy.
            env.update(https_proxy=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, http_proxy=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY,
                       no_proxy="127.0.0.0/8,localhost", NO_PROXY="127.0.0.0/8,localhost")
        return env

    def is_running(self) -> bool:
        state = HarnessState.load(self.dir)
        if not (state and _pid_alive(state.daemon_pid)):
            return False
        try:
            api = LXDApi(self.socket_path)
            try:
                api.request("GET", "/1.0")
            finally:
                api.close()
            return True
        except (httpx.HTTPError, HarnessError, OSError):
            return False

    def start(self, timeout: float = 90.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)
        self.state.save(self.dir)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the daemon
        self.proc = subprocess.Popen(list(self.backend.daemon), env=self._env(), stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.state.daemon_pid = self.proc.pid
        self.state.save(self.dir)
        r = subprocess.run([*self.backend.cli, "waitready", f"--timeout={int(timeout)}"], env=self._env(),
                           check=False, capture_output=True, text=True)
        if r.returncode != 0 or self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise HarnessError(f"{self.backend.title} did not become ready in {self.dir}: {r.stderr.strip()}\n{tail}")

    @property
    def log_path(self) -> Path:
        return self.dir / self.backend.log_name

    def prepare(self, *, image_tarball: Path, https: bool = True, bridge: bool = True,
                public_image: bool = False) -> DaemonInfo:
        api = LXDApi(self.socket_path)
        try:
            return self._prepare(api, image_tarball=image_tarball, https=https, bridge=bridge,
                                 public_image=public_image)
        finally:
            api.close()

    def _prepare(self, api: LXDApi, *, image_tarball: Path, https: bool, bridge: bool,
                 public_image: bool) -> DaemonInfo:
        if self.backend is INCUS:
            # Incus looks up its image servers at start-up and on a timer: no outbound traffic from tests.
            api.request("PATCH", "/1.0", json={"config": {"images.auto_update_interval": "0"}})
        pools = api.request("GET", "/1.0/storage-pools") or []  # Incus: null for an empty list
        if "/1.0/storage-pools/default" not in pools:
            api.request("POST", "/1.0/storage-pools", json={"name": "default", "driver": "dir", "config": {}})
        devices: dict[str, dict[str, str]] = {"root": {"type": "disk", "path": "/", "pool": "default"}}
        bridge_name, subnet = "", ""
        if bridge:
            bridge_name = BRIDGE_PREFIX + secrets.token_hex(4)
            subnet = pick_subnet()
            self.state.bridges.append(bridge_name)
            self.state.save(self.dir)
            api.request("POST", "/1.0/networks", json={
                "name": bridge_name, "type": "bridge",
                "config": {"ipv4.address": subnet, "ipv4.nat": "false", "ipv6.address": "none",
                           "ipv4.firewall": "false", "ipv6.firewall": "false"}})
            devices["eth0"] = {"type": "nic", "nictype": "bridged", "parent": bridge_name, "name": "eth0"}
        api.request("PUT", "/1.0/profiles/default", json={"config": {},
                                                           "description": f"Default {self.backend.title} profile",
                                                           "devices": devices})
        fingerprint = self._import_image(api, image_tarball, public=public_image,
                                         header_prefix=self.backend.header_prefix)
        client_cert = client_key = ""
        https_url, port = "", 0
        env = api.request("GET", "/1.0")["environment"]
        if https:
            port = free_port()
            api.request("PATCH", "/1.0", json={"config": {"core.https_address": f"127.0.0.1:{port}"}})
            client_cert, client_key = write_client_certificate(self.dir / "client.crt", self.dir / "client.key")
            der_b64 = "".join(Path(client_cert).read_text().strip().splitlines()[1:-1])
            api.request("POST", "/1.0/certificates", json={"type": "client", "name": "harness",
                                                            "certificate": der_b64})
            https_url = f"https://127.0.0.1:{port}"
            self._wait_port(port)
        server_cert = self.dir / "server.crt"
        self.info = DaemonInfo(
            lxd_dir=str(self.dir), socket_path=str(self.socket_path), https_url=https_url, https_port=port,
            client_cert=client_cert, client_key=client_key, server_cert=str(server_cert),
            server_fingerprint=env["certificate_fingerprint"], bridge=bridge_name, subnet=subnet,
            image_fingerprint=fingerprint, backend=self.backend.name)
        (self.dir / "daemon.json").write_text(json.dumps(asdict(self.info), indent=2))
        return self.info

    def _keep_log(self, why: str) -> None:
        """A daemon that died on its own: keep its log (the directory goes) for whoever reads the failure."""
        with contextlib.suppress(OSError):
            out = Path("test-artifacts") / f"{self.backend.name}-{self.dir.name}.log"
            out.parent.mkdir(exist_ok=True)
            shutil.copyfile(self.log_path, out)
            log(f"{self.backend.title} in {self.dir} {why}; its log is kept in {out}")

    @staticmethod
    def _wait_port(port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            time.sleep(0.1)
        raise HarnessError(f"HTTPS listener on port {port} did not open")

    @staticmethod
    def _import_image(api: LXDApi, tarball: Path, *, public: bool, alias: str = "busybox",
                      header_prefix: str = "X-LXD-") -> str:
        aliases = api.request("GET", "/1.0/images/aliases") or []
        if f"/1.0/images/aliases/{alias}" in aliases:
            return str(api.request("GET", f"/1.0/images/aliases/{alias}")["target"])
        with open(tarball, "rb") as f:
            op = api.request("POST", "/1.0/images", content=f.read(), headers={
                "Content-Type": "application/octet-stream", f"{header_prefix}public": "1" if public else "0"})
        fingerprint = str(op["metadata"]["fingerprint"])
        api.request("POST", "/1.0/images/aliases", json={"name": alias, "target": fingerprint})
        return fingerprint

    def stop(self) -> None:
        """Stop the daemon and remove every trace of it (the directory too, unless persistent)."""
        state = HarnessState.load(self.dir) or self.state
        if self.proc is not None and self.proc.poll() is not None and not self.persistent:
            self._keep_log(f"exited with {self.proc.returncode} before it was stopped")
        if self.socket_path.exists():
            with contextlib.suppress(Exception):
                api = LXDApi(self.socket_path)
                try:
                    for url in api.request("GET", "/1.0/instances") or []:
                        name = url.rsplit("/", 1)[1]
                        with contextlib.suppress(HarnessError):
                            api.request("PUT", f"/1.0/instances/{name}/state",
                                        json={"action": "stop", "force": True})
                    # Bridges made through the API (by tests) are removed with the daemon's own.
                    for net in api.request("GET", "/1.0/networks", params={"recursion": 1}) or []:
                        if net.get("managed") and net["name"] not in state.bridges:
                            state.bridges.append(net["name"])
                    state.save(self.dir)
                finally:
                    api.close()
            subprocess.run([*self.backend.cli, "shutdown", "--timeout=15"], env=self._env(), check=False,
                           capture_output=True, timeout=30)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if state.daemon_pid and _pid_alive(state.daemon_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.daemon_pid, signal.SIGKILL)
        kill_processes_of(self.dir)
        time.sleep(0.2)
        unmount_under(self.dir)
        for bridge in state.bridges:
            delete_bridge(bridge)
        remove_lock_dir(self.dir)
        if self.persistent and self.dir.exists():
            state.daemon_pid = None
            state.bridges = []
            state.save(self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def backend_title_of(socket_path: str) -> str:
    """"Incus" or "LXD": what answers on a unix socket (what its path suggests when nothing answers)."""
    api = LXDApi(Path(socket_path))
    try:
        return "Incus" if api.request("GET", "/1.0")["environment"].get("server") == "incus" else "LXD"
    except (httpx.HTTPError, HarnessError, OSError, KeyError, TypeError, ValueError):
        return "Incus" if "incus" in socket_path.lower() else "LXD"
    finally:
        api.close()


# --------------------------------------------------------------------------------------------- image


def image_tarball(cache_dir: Path | None = None, pad_mb: int = 0) -> Path:
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "lxd-gateway-image-cache"
    suffix = f"-pad{pad_mb}" if pad_mb else ""
    path = cache_dir / f"busybox{suffix}.tar.gz"
    if not path.exists():
        tmp = build_busybox_image(cache_dir / f".tmp-{os.getpid()}{suffix}.tar.gz", pad_mb=pad_mb)
        tmp.replace(path)
    return path
