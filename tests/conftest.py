"""Shared fixtures: the real private LXD daemons every integration and API test runs against.

`lxd_env` starts them once per session (installing LXD when missing) and tears them down at the end, even when
tests fail. When LXD cannot start, the tests that need it fail: they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.harness.daemon import DaemonInfo, HarnessEnvironment, HarnessError, harness_environment


@pytest.fixture(scope="session")
def lxd_env() -> Iterator[HarnessEnvironment]:
    try:
        cm = harness_environment()
        env = cm.__enter__()
    except (HarnessError, OSError) as exc:
        pytest.fail(f"the private LXD could not be started: {exc}", pytrace=False)
    try:
        yield env
    finally:
        cm.__exit__(None, None, None)


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
