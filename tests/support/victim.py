"""A private LXD of the test's own, which the test may kill (SIGKILL, SIGSTOP) and start again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.locallxd.daemon import DaemonInfo, LocalDaemon, image_tarball


@pytest.fixture
def victim() -> Iterator[tuple[LocalDaemon, DaemonInfo]]:
    daemon = LocalDaemon()
    try:
        daemon.start()
        info = daemon.prepare(image_tarball=image_tarball())
        yield daemon, info
    finally:
        daemon.stop()
