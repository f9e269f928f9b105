"""A private PostgreSQL for the tests: one server per session, an empty database per test.

`postgres_server` runs `initdb` and `pg_ctl` (as the `postgres` user when the tests run as root: PostgreSQL refuses
root) in a temporary directory, listening only on a unix socket there (`listen_addresses=''`), and removes it at
the end. Debian's PostgreSQL is installed with apt when its binaries are missing (root on Debian). When the server
cannot start, the tests that need it fail: they never skip. `postgres_url` is an empty database for one test (a new
one, or one an earlier test used, emptied: see `Databases`). `own_postgres_server` is a server of one test's own,
for a test that stops it (`stop("immediate")`, `start()`): the session's server stays untouched. Every test that
uses them, or the `store` fixture's `postgres` flavour, is marked `postgres` at collection: `pytest -m "not
postgres"` leaves them out. `private_postgres(tls=ServerTls(...))` starts a server that also listens on 127.0.0.1
(a free port), with `ssl=on`, accepting TCP connections over TLS only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.locallxd.daemon import HarnessError, _pid_alive, apt_install, free_port

PG_FIXTURES = {"postgres_server", "postgres_databases", "postgres_url", "own_postgres_server"}
_SEQ = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the private PostgreSQL server (tests/support/postgres.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())) or "postgres" in params.values():
            item.add_marker(pytest.mark.postgres)


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian keeps them in /usr/lib/postgresql/<major>/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def ensure_postgres() -> Path:
    """The binaries' directory, installing Debian's `postgresql` first when it is missing."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessError("PostgreSQL is not installed and cannot be installed here (need root on Debian): "
                           "install it with `apt-get install postgresql`")
    apt_install(["postgresql"])
    bindir = find_bindir()
    if bindir is None:
        raise HarnessError("PostgreSQL's binaries are still missing after `apt-get install postgresql`")
    return bindir


@dataclass
class ServerTls:
    """The server certificate (PEM, its chain after it) and its unencrypted private key (PEM) of a TLS server."""

    cert: Path
    key: Path


@dataclass
class PostgresServer:
    """A running private server: data in `directory/data`, socket in `directory/sock`, log in `directory/log`.
    With `tls`, also on 127.0.0.1:`port` over TLS only (`directory/server.crt` and `server.key`)."""

    bindir: Path
    directory: Path
    as_user: str | None
    port: int = 5432
    tls: bool = False

    @property
    def socket_dir(self) -> Path:
        return self.directory / "sock"

    def url(self, dbname: str = "postgres") -> str:
        port = f"&port={self.port}" if self.port != 5432 else ""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}{port}"

    def tcp_url(self, dbname: str = "postgres", **params: str) -> str:
        """A URL over TCP on 127.0.0.1 (a `tls` server), with libpq parameters (e.g. sslmode, sslrootcert)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}" + (f"?{query}" if query else "")

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            log = self.directory / "log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise HarnessError(f"{args[0]} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-800:]} {tail}")
        return r

    def init(self) -> None:
        self._run("initdb", "-D", str(self.directory / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C.UTF-8")
        if self.tls:  # TCP only over TLS; the unix socket as before
            (self.directory / "data" / "pg_hba.conf").write_text(
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")

    def start(self) -> None:
        listen = "127.0.0.1" if self.tls else "''"
        options = (f"-k {self.socket_dir} -c listen_addresses={listen} -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        if self.tls:
            options += (f" -c port={self.port} -c ssl=on -c ssl_cert_file={self.directory}/server.crt"
                        f" -c ssl_key_file={self.directory}/server.key")
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-o", options, "-l", str(self.directory / "log"),
                  "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", mode, "-w", "-t", "30", "stop")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                         "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql).stdout.strip()


PREFIX = "lxdgw-pg-"


def remove_stale(bindir: Path, as_user: str | None) -> None:
    """Stop and remove the servers of test sessions that died without doing it (their `owner.pid` is gone)."""
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((directory / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _pid_alive(owner):
            continue
        if (directory / "data" / "postmaster.pid").exists():
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                PostgresServer(bindir, directory, as_user).stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(tls: ServerTls | None = None) -> Iterator[PostgresServer]:
    """Start a private server in a temporary directory; stop it and remove the directory at the end. With `tls`,
    it also listens on 127.0.0.1 (a free port: `server.port`), over TLS only, with that certificate and key."""
    bindir = ensure_postgres()
    as_user = "postgres" if os.geteuid() == 0 else None
    remove_stale(bindir, as_user)
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    started = False
    try:
        (directory / "owner.pid").write_text(str(os.getpid()))
        (directory / "sock").mkdir()
        if as_user:
            entry = pwd.getpwnam(as_user)
            for path in (directory, directory / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        server = PostgresServer(bindir, directory, as_user)
        if tls is not None:
            server.port, server.tls = free_port(), True
            _install_tls(tls, directory, as_user)
        server.init()
        server.start()
        started = True
        yield server
    finally:
        if started:
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def _install_tls(tls: ServerTls, directory: Path, as_user: str | None) -> None:
    """The certificate and key where the server reads them, owned by its user (it refuses a key others can read)."""
    for source, name in ((tls.cert, "server.crt"), (tls.key, "server.key")):
        target = directory / name
        target.write_bytes(source.read_bytes())
        target.chmod(0o600)
        if as_user:
            entry = pwd.getpwnam(as_user)
            os.chown(target, entry.pw_uid, entry.pw_gid)


class Databases:
    """Databases for the tests. A test gets an empty one: a database an earlier test released, emptied first (its
    sessions ended, its `public` schema dropped and made again: a few milliseconds), or a new one (CREATE DATABASE:
    a few tenths of a second). They go with the server at the end of the session."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._free: list[str] = []

    def take(self) -> str:
        import psycopg

        ensure_running(self.server)
        while self._free:
            name = self._free.pop()
            try:
                with psycopg.connect(self.server.url(name), autocommit=True, connect_timeout=10) as conn:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                    conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                return name
            except psycopg.Error:
                continue  # left unusable (e.g. by a server stopped mid-test): take another
        name = f"test_{os.getpid()}_{next(_SEQ)}"
        self.server.psql(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def release(self, name: str) -> None:
        self._free.append(name)


def _started_or_fail() -> Iterator[PostgresServer]:
    """A private server (`private_postgres`) for as long as the generator runs; the test fails when it cannot
    start."""
    try:
        cm = private_postgres()
        server = cm.__enter__()
    except (HarnessError, OSError, subprocess.TimeoutExpired, KeyError) as exc:
        pytest.fail(f"the private PostgreSQL could not be started: {exc}", pytrace=False)
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _started_or_fail()


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: PostgresServer) -> Databases:
    return Databases(postgres_server)


def ensure_running(server: PostgresServer) -> None:
    """Start the server again if a test stopped it."""
    if not (server.socket_dir / f".s.PGSQL.{server.port}").exists():
        server.start()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgres_databases: Databases) -> Iterator[str]:
    """An empty database on the private server, for this test alone."""
    name = postgres_databases.take()
    try:
        yield postgres_server.url(name)
    finally:
        ensure_running(postgres_server)
        postgres_databases.release(name)


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A private server for this test alone (a few seconds to make), stopped and removed after it: for a test that
    stops the server (e.g. `stop("immediate")` as in a crash, then `start()`)."""
    yield from _started_or_fail()
