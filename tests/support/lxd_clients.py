"""Clients of the real private LXD for the core services, and throwaway daemons for what must not touch it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.locallxd.daemon import DaemonInfo, LocalDaemon, image_tarball
from app.lxd import Client, LXDError
from tests.support.cleanup import remove_instance  # noqa: F401 - re-exported to the tests here
from tests.support.cleanup import unique as shared_unique


def unique(prefix: str = "lgw") -> str:
    return shared_unique(prefix, 8)


def bridge_name() -> str:
    """A unique bridge name (15 characters at most, `lgw` prefix, so the harness cleans up after a killed run)."""
    return "lgw" + uuid.uuid4().hex[:9]


@pytest.fixture(scope="session")
async def core_client(lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.unix(lxd_daemon.socket_path) as c:
        yield c


class Throwaway:
    """A private daemon of the test's own (HTTPS on a free loopback port, image public when asked)."""

    def __init__(self, pad_mb: int = 0, public_image: bool = False) -> None:
        self.daemon = LocalDaemon()
        self.pad_mb = pad_mb
        self.public_image = public_image
        self.info: DaemonInfo | None = None
        self.stopped = False

    def start(self) -> DaemonInfo:
        self.daemon.start()
        self.info = self.daemon.prepare(image_tarball=image_tarball(pad_mb=self.pad_mb), bridge=False,
                                        public_image=self.public_image)
        return self.info

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.daemon.stop()

    @property
    def server_cert_pem(self) -> str:
        assert self.info is not None
        return Path(self.info.server_cert).read_text()


@pytest.fixture(scope="module")
def throwaway() -> Iterator[Throwaway]:
    t = Throwaway()
    try:
        t.start()
        yield t
    finally:
        t.stop()


@pytest.fixture(scope="module")
async def throwaway_client(throwaway: Throwaway) -> AsyncIterator[Client]:
    assert throwaway.info is not None
    async with Client.unix(throwaway.info.socket_path) as c:
        yield c


async def until(cond: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = cond() if callable(cond) else cond
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def cleanup(core_client: Client) -> AsyncIterator[dict[str, list[str]]]:
    """Profiles and networks a test made (it appends their names), deleted after it."""
    made: dict[str, list[str]] = {"profiles": [], "networks": []}
    yield made
    for p in made["profiles"]:
        with contextlib.suppress(LXDError):
            await core_client.profiles.delete(p)
    for n in made["networks"]:
        with contextlib.suppress(LXDError):
            await core_client.networks.delete(n)


async def profile(client: Client, made: dict[str, list[str]], devices: dict[str, dict[str, str]]) -> str:
    name = unique("lgwp")
    await client.profiles.create(name, devices=devices)
    made["profiles"].append(name)
    return name
