"""§16 profile scenarios (s11, s12) against the real private LXD, on profiles of the tests' own (unique `lgw`
names, removed afterwards)."""

from __future__ import annotations

from app.lxd import Client
from app.profiles.service import create_profile_with_config, has_profile
from tests.support.lxd_clients import unique


async def test_s11_s12_has_profile_and_create_with_config(core_client: Client,
                                                          cleanup: dict[str, list[str]]) -> None:
    name = unique("lgwp")
    assert await has_profile(core_client, "default")
    assert not await has_profile(core_client, name)
    await create_profile_with_config(core_client, name, {"boot.autostart": "false"})
    cleanup["profiles"].append(name)
    assert await has_profile(core_client, name)
    assert not await has_profile(core_client, name.upper())
    got = await core_client.profiles.get(name)
    assert got.config == {"boot.autostart": "false"} and got.devices == {}
