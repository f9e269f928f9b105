"""Fixtures of the fake LXD (tests/fakes/lxd.py): `fake_lxd` serving its events socket, `make_fake_client` (a client
of it for a server of the given kind), `fake_client` (one of LXD 5.0 without extensions)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.lxd import Client
from tests.fakes.lxd import FakeLXD, server_info


@pytest.fixture
async def fake_lxd(tmp_path: Path) -> AsyncIterator[FakeLXD]:
    async with FakeLXD(str(tmp_path / "events.sock")).serving() as f:
        yield f


@pytest.fixture
def make_fake_client(fake_lxd: FakeLXD) -> Callable[..., Client]:
    def make(server: str = "lxd", extensions: list[str] | None = None, **kw: Any) -> Client:
        fake_lxd.server_info = server_info(server, extensions, **kw)
        return fake_lxd.client()

    return make


@pytest.fixture
async def fake_client(make_fake_client: Callable[..., Client]) -> AsyncIterator[Client]:
    async with make_fake_client() as c:
        yield c
