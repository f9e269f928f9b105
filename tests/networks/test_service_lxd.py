"""§16 networking scenarios against the real private LXD, on profiles and bridges of the tests' own (unique `lgw`
names, removed afterwards)."""

from __future__ import annotations

import pytest

from app.locallxd.daemon import DaemonInfo, pick_subnet
from app.lxd import Client
from app.networks.decisions import NoUsableNicError, ipv6_refusal
from app.networks.service import (
    NetworkVerifyError,
    ensure_ipv4,
    nics_from_profile,
    verify_network_device,
)
from tests.support.lxd_clients import bridge_name, profile

NO_FIREWALL = {"ipv4.firewall": "false", "ipv6.firewall": "false"}


async def ipv6_network(client: Client, made: dict[str, list[str]]) -> str:
    name = bridge_name()
    await client.networks.create(name, config={"ipv4.address": "none", "ipv6.address": "fd42:4c67:1e2a:9b1::1/64",
                                               "ipv6.nat": "false", "ipv6.dhcp": "false",
                                               "ipv4.firewall": "false", "ipv6.firewall": "false"})
    made["networks"].append(name)
    return name


async def test_s37_nics_from_profile_fill_missing_macs(core_client: Client, lxd_daemon: DaemonInfo) -> None:
    nics = await nics_from_profile(core_client, "default")
    assert set(nics) == {"eth0"} and nics["eth0"]["parent"] == lxd_daemon.bridge
    assert nics["eth0"]["hwaddr"].startswith("00:16:3e:")
    assert "hwaddr" not in (await core_client.profiles.get("default")).devices["eth0"]  # not written back


async def test_s38_nic_on_a_managed_bridge_is_usable(core_client: Client, lxd_daemon: DaemonInfo,
                                                     cleanup: dict[str, list[str]]) -> None:
    legacy = await profile(core_client, cleanup, {"eth0": {"type": "nic", "nictype": "bridged",
                                                           "parent": lxd_daemon.bridge}})
    modern = await profile(core_client, cleanup, {"eth0": {"type": "nic", "network": lxd_daemon.bridge}})
    for p in (legacy, modern):
        result = await verify_network_device(core_client, p)
        assert result.bridge == lxd_daemon.bridge and result.added_nic is None
    assert (await verify_network_device(core_client, "default", create=False)).bridge == lxd_daemon.bridge


async def test_s39_ipv6_nic_passed_over_for_a_valid_one(core_client: Client, lxd_daemon: DaemonInfo,
                                                        cleanup: dict[str, list[str]]) -> None:
    v6 = await ipv6_network(core_client, cleanup)
    p = await profile(core_client, cleanup, {"eth0": {"type": "nic", "network": v6},
                                             "eth1": {"type": "nic", "network": lxd_daemon.bridge}})
    assert (await verify_network_device(core_client, p)).bridge == lxd_daemon.bridge


async def test_s41_ipv6_network_refused_with_the_exact_message(core_client: Client,
                                                               cleanup: dict[str, list[str]]) -> None:
    v6 = await ipv6_network(core_client, cleanup)
    p = await profile(core_client, cleanup, {"eth0": {"type": "nic", "network": v6}})
    with pytest.raises(NetworkVerifyError) as err:
        await verify_network_device(core_client, p)
    assert str(err.value) == f'profile "{p}": ' + ipv6_refusal(v6)


async def test_s40_no_bridged_or_macvlan_nic(core_client: Client, cleanup: dict[str, list[str]]) -> None:
    p = await profile(core_client, cleanup, {"eth0": {"type": "nic", "nictype": "p2p"}})
    with pytest.raises(NetworkVerifyError) as err:
        await verify_network_device(core_client, p)
    assert str(err.value) == (
        f'profile "{p}": no network device found with nictype "bridged" or "macvlan"\n'
        "\tthe following devices were checked: eth0\n"
        "Note: juju does not support IPv6.\n"
        'Reconfigure lxd to use a network of type "bridged" or "macvlan", disabling IPv6.')
    assert isinstance(err.value.__cause__, NoUsableNicError)


async def test_verify_aborts_on_a_network_it_cannot_read(core_client: Client,
                                                         cleanup: dict[str, list[str]]) -> None:
    p = await profile(core_client, cleanup, {"eth0": {"type": "nic", "nictype": "bridged", "parent": "lgwnosuch0"}})
    with pytest.raises(NetworkVerifyError, match=f'^profile "{p}": retrieving network "lgwnosuch0": '):
        await verify_network_device(core_client, p)


async def test_s42_s43_no_nic_creates_the_bridge_and_the_first_free_eth(core_client: Client,
                                                                        cleanup: dict[str, list[str]]) -> None:
    bridge = bridge_name()
    cleanup["networks"].append(bridge)
    p = await profile(core_client, cleanup, {"eth0": {"type": "none"}, "eth1": {"type": "none"}})
    with pytest.raises(NetworkVerifyError, match="does not have any devices"):
        await verify_network_device(core_client, p, bridge=bridge, create=False)
    subnet = pick_subnet()  # LXD's own "auto" cannot find a free subnet on every host
    result = await verify_network_device(core_client, p, bridge=bridge, nat=False,
                                         bridge_config={**NO_FIREWALL, "ipv4.address": subnet})
    assert result.bridge == bridge and result.created_bridge and result.added_nic == "eth2"
    net = await core_client.networks.get(bridge)
    assert net.type == "bridge" and net.managed
    assert net.config["ipv4.nat"] == "false" and net.config["ipv6.address"] == "none"
    assert net.config["ipv4.address"] == subnet
    devices = (await core_client.profiles.get(p)).devices
    assert devices["eth2"] == {"type": "nic", "nictype": "bridged", "parent": bridge}
    # a second profile reuses the existing bridge and gets eth0
    q = await profile(core_client, cleanup, {})
    again = await verify_network_device(core_client, q, bridge=bridge, nat=False)
    assert again.added_nic == "eth0" and not again.created_bridge
    assert (await verify_network_device(core_client, q, bridge=bridge)).added_nic is None
    cleanup["profiles"].reverse()


async def test_s36_ensure_ipv4(core_client: Client, cleanup: dict[str, list[str]]) -> None:
    name = bridge_name()
    await core_client.networks.create(name, config={"ipv4.address": "none", "ipv6.address": "none",
                                                    **NO_FIREWALL})
    cleanup["networks"].append(name)
    subnet = pick_subnet()
    assert await ensure_ipv4(core_client, name, nat=False, address=subnet) is True
    cfg = (await core_client.networks.get(name)).config
    assert cfg["ipv4.address"] == subnet and cfg["ipv4.nat"] == "false"
    assert await ensure_ipv4(core_client, name, nat=False, address=pick_subnet()) is False
    assert (await core_client.networks.get(name)).config["ipv4.address"] == subnet
