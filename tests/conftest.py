"""Shared fixtures: the real private LXD daemons the `lxd` tests run against.

`lxd_env` starts them once per session (installing LXD when missing) and tears them down at the end, even when
tests fail. When LXD cannot start, the tests that need it fail: they never skip. Every test that uses them is
marked `lxd` at collection, so `pytest -m "not lxd"` runs the quick tests alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from app.locallxd.daemon import DaemonInfo, HarnessError
from tests.support.lxd_env import HarnessEnvironment, harness_environment

pytest_plugins = ["tests.fakes.fixtures", "tests.support.app", "tests.support.job_store", "tests.support.lxd_clients",
                  "tests.support.postgres",
                  "tests.support.victim"]

_ENV: list[HarnessEnvironment] = []


LXD_FIXTURES = {"lxd_env", "throwaway"}  # the session's private daemons; a module's own throwaway daemon


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `lxd` every test that needs a real LXD through its fixtures (tests that start a daemon of their own
    carry the mark themselves)."""
    for item in items:
        if LXD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lxd)


@pytest.fixture(scope="session")
def lxd_env() -> Iterator[HarnessEnvironment]:
    try:
        cm = harness_environment()
        env = cm.__enter__()
    except (HarnessError, OSError) as exc:
        pytest.fail(f"the private LXD could not be started: {exc}", pytrace=False)
    _ENV.append(env)
    try:
        yield env
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _lxd_still_running(request: pytest.FixtureRequest) -> None:
    """Before each test that uses the private LXD: restart it if it died during an earlier test (and say so)."""
    if "lxd_env" in request.fixturenames:
        env: HarnessEnvironment = request.getfixturevalue("lxd_env")
        for directory in env.revive():
            print(f"\n[lxd-harness] the LXD in {directory} had died and was restarted; see test-artifacts/")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    env = _ENV[0] if _ENV else None
    if env is not None and env.revived:
        terminalreporter.write_line(f"LXD died during the run and was restarted: {', '.join(env.revived)} "
                                    "(its log is in test-artifacts/)", red=True)


@pytest.fixture(scope="session")
def lxd_daemon(lxd_env: HarnessEnvironment) -> DaemonInfo:
    """The main private daemon: unix socket, HTTPS listener with a trusted client cert, pool, bridge, image."""
    return lxd_env.main


@pytest.fixture(scope="session")
def lxd_socket(lxd_daemon: DaemonInfo) -> str:
    return lxd_daemon.socket_path


@pytest.fixture(scope="session")
def image_server(lxd_env: HarnessEnvironment) -> DaemonInfo:
    """The second daemon, serving the busybox image publicly over HTTPS (protocol `lxd`)."""
    return lxd_env.image_server


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
