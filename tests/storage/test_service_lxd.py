"""§16 storage scenarios (s49, s50) against the real private LXD, on pools and profiles of the tests' own (unique
`lgw` names, removed afterwards)."""

from __future__ import annotations

import contextlib

import pytest

from app.lxd import Client, LXDError
from app.storage.service import StorageServiceError, create_pool, create_volume, ensure_default_storage
from tests.support.lxd_clients import profile, unique


async def test_s49_create_pool_and_volume(core_client: Client) -> None:
    pool, volume = unique("lgwpool"), unique("vol")
    await create_pool(core_client, pool, "dir", {})
    try:
        await create_volume(core_client, pool, volume, {})
        vol = await core_client.storage.volume(pool, volume)
        assert vol.name == volume and vol.type == "custom"
        with pytest.raises(StorageServiceError, match=f'^creating storage pool volume "{volume}": '):
            await create_volume(core_client, pool, volume, {})
        with pytest.raises(StorageServiceError, match=f'^creating storage pool "{pool}": '):
            await create_pool(core_client, pool, "dir", {})
    finally:
        with contextlib.suppress(LXDError):
            await core_client.storage.delete_volume(pool, volume)
        await core_client.storage.delete(pool)


async def test_s50_ensure_default_storage(core_client: Client, cleanup: dict[str, list[str]]) -> None:
    bare = await profile(core_client, cleanup, {})
    assert await ensure_default_storage(core_client, bare) == "default"
    assert (await core_client.profiles.get(bare)).devices["root"] == {"type": "disk", "path": "/",
                                                                       "pool": "default"}
    assert await ensure_default_storage(core_client, bare) is None
    assert await ensure_default_storage(core_client, "default") is None
