"""Shared fixtures: the real private LXD (and Incus) daemons the `lxd` tests run against.

`lxd_env` starts them once per session (installing LXD when missing) and tears them down at the end, even when
tests fail; `incus_env` does the same for Incus 6.0, started only when a test runs on Incus. When a backend cannot
start, the tests that need it fail: they never skip. Every test that uses them is marked `lxd` at collection, so
`pytest -m "not lxd"` runs the quick tests alone. `lxd_cluster` (tests/support/lxd_cluster.py) is a private
3-member LXD cluster on loopback addresses, started once by the first test that asks for it.

Backends: `lxd_daemon` (and `image_server`, and every fixture built on them: the gateway `app`/`client`, raw
clients) is the daemon of the session-scoped `backend`, `lxd` unless a module (or test) is marked
`@pytest.mark.backends(...)`: then each of its tests runs once per named backend, `lxd` and `incus` by default.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

import pytest

from app.locallxd.daemon import BACKENDS, OFFLINE_ENV, DaemonInfo, HarnessError
from tests.support.lxd_env import HarnessEnvironment, harness_environment

pytest_plugins = ["tests.fakes.fixtures", "tests.support.app", "tests.support.job_store", "tests.support.lxd_clients",
                  "tests.support.lxd_cluster", "tests.support.postgres",
                  "tests.support.victim"]

os.environ.setdefault(OFFLINE_ENV, "1")  # the private daemons the tests start reach nothing outside this machine

_ENV: list[HarnessEnvironment] = []

ALL_BACKENDS = ("lxd", "incus")

# the session's private daemons (either backend), its LXD cluster; a module's own throwaway daemon
LXD_FIXTURES = {"lxd_env", "incus_env", "backend_env", "lxd_cluster", "throwaway"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `lxd` every test that needs a real LXD through its fixtures (tests that start a daemon of their own
    carry the mark themselves)."""
    for item in items:
        if LXD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lxd)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test on a real daemon gets a `backend`: the backends its `backends` mark names, else `lxd` alone.
    One session-scoped value per backend, so pytest groups the tests of each and starts each backend once."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = (marker.args or ALL_BACKENDS) if marker is not None else ("lxd",)
    metafunc.parametrize("backend", names, indirect=True, scope="session")


def _environment(backend: str) -> Iterator[HarnessEnvironment]:
    title = BACKENDS[backend].title
    try:
        cm = harness_environment(BACKENDS[backend], clean=not _ENV)
        env = cm.__enter__()
    except (HarnessError, OSError) as exc:
        pytest.fail(f"the private {title} could not be started: {exc}", pytrace=False)
    _ENV.append(env)
    try:
        yield env
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def lxd_env() -> Iterator[HarnessEnvironment]:
    yield from _environment("lxd")


@pytest.fixture(scope="session")
def incus_env() -> Iterator[HarnessEnvironment]:
    """Incus 6.0 daemons (installed from bookworm-backports when missing), started by the first test on Incus."""
    yield from _environment("incus")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """`lxd` or `incus`: the backend of `lxd_daemon`, `image_server` and the gateway `app` (see the module doc)."""
    return str(getattr(request, "param", "lxd"))


@pytest.fixture(scope="session")
def backend_env(request: pytest.FixtureRequest, backend: str) -> HarnessEnvironment:
    env: HarnessEnvironment = request.getfixturevalue("incus_env" if backend == "incus" else "lxd_env")
    return env


@pytest.fixture(autouse=True)
def _lxd_still_running(request: pytest.FixtureRequest) -> None:
    """Before each test that uses a private daemon: restart it if it died during an earlier test (and say so)."""
    for name in ("lxd_env", "backend_env"):
        if name in request.fixturenames:
            env: HarnessEnvironment = request.getfixturevalue(name)
            for directory in env.revive():
                print(f"\n[lxd-harness] the daemon in {directory} had died and was restarted; see test-artifacts/")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    revived = [d for env in _ENV for d in env.revived]
    if revived:
        terminalreporter.write_line(f"a daemon died during the run and was restarted: {', '.join(revived)} "
                                    "(its log is in test-artifacts/)", red=True)


@pytest.fixture(scope="session")
def lxd_daemon(backend_env: HarnessEnvironment) -> DaemonInfo:
    """The main private daemon of `backend`: unix socket, HTTPS listener with a trusted client cert, pool, bridge,
    image."""
    return backend_env.main


@pytest.fixture(scope="session")
def lxd_socket(lxd_daemon: DaemonInfo) -> str:
    return lxd_daemon.socket_path


@pytest.fixture(scope="session")
def image_server(backend_env: HarnessEnvironment) -> DaemonInfo:
    """The second daemon of `backend`, serving the busybox image publicly over HTTPS (protocol `lxd` or `incus`:
    `image_server.backend`)."""
    return backend_env.image_server


# -- no secret in any log line of the whole run -----------------------------------------------------------------

SECRET_PATTERNS = {
    "API token": re.compile(r"lxdgw_[A-Za-z0-9_-]{20,}"),
    "websocket ticket": re.compile(r"lxdgwt_[A-Za-z0-9_-]{20,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


class _SecretWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + " " + repr(record.__dict__.get("audit", ""))
        except Exception:
            text = str(record.msg)
        for what, pattern in SECRET_PATTERNS.items():
            if pattern.search(text):
                self.leaks.append(f"{what} in a log line of {record.name}: {text[:200]}")


_WATCH = _SecretWatch()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_WATCH)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as the gateway configures it


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _WATCH.leaks:
        print("\nsecrets appeared in the logs:\n  " + "\n  ".join(_WATCH.leaks[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
