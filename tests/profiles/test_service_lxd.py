"""§16 profile scenarios (s11, s12) against the real private LXD, on profiles of the tests' own (unique `lgw`
names, removed afterwards)."""

from __future__ import annotations

from app.lxd import Client
from tests.support.lxd_clients import unique


async def test_s11_s12_profile_names_and_create_with_config(core_client: Client,
                                                          cleanup: dict[str, list[str]]) -> None:
    name = unique("lgwp")
    names = await core_client.profiles.names()
    assert "default" in names and name not in names
    got = await core_client.profiles.create(name, config={"boot.autostart": "false"})
    cleanup["profiles"].append(name)
    names = await core_client.profiles.names()
    assert name in names and name.upper() not in names
    assert got.config == {"boot.autostart": "false"} and got.devices == {}
