"""§8 networking decisions; §16 scenarios 36-48 and 52 (42-44 as the decisions and bodies the LXD calls use)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from app.networks.decisions import (
    BRIDGE_CONFIG_FILE,
    SNAP_BRIDGE_CONFIG_FILE,
    BridgeConfigError,
    InterfaceInfo,
    IPv6NotSupportedError,
    NetworkAction,
    NetworkConfigError,
    NoNicError,
    NoUsableNicError,
    bridge_network_request,
    check_bridge_config_file,
    default_nic,
    devices_from_interface_info,
    generate_mac,
    interface_info_from_devices,
    ipv4_update,
    needs_bridge_ipv4,
    networks_to_check,
    new_nic_device,
    nics_from_profile,
    profile_with_default_nic,
    unique_nic_name,
    verify_network_action,
    verify_nics_with_config_file,
    verify_nics_with_networks,
    verify_no_ipv6,
)


def test_s36_ensure_ipv4_keeps_an_existing_address() -> None:
    assert ipv4_update({"name": "lxdbr0", "config": {"ipv4.address": "10.5.3.1"}}) is None
    assert ipv4_update({"config": {"ipv4.address": ""}}) is None


def test_s36_ensure_ipv4_on_an_empty_network() -> None:
    assert ipv4_update({}) == {"config": {"ipv4.address": "auto", "ipv4.nat": "true"}, "description": ""}


def test_s36_ensure_ipv4_replaces_none_and_nat() -> None:
    body = ipv4_update({"config": {"ipv4.address": "none", "ipv4.nat": "false", "x": "y"}, "description": "d"})
    assert body == {"config": {"ipv4.address": "auto", "ipv4.nat": "true", "x": "y"}, "description": "d"}


def test_s37_nics_from_profile_fill_missing_mac() -> None:
    profile = {"name": "default", "devices": {
        "eth0": {"parent": "lxdbr0", "type": "nic", "nictype": "bridged"},
        "eth1": {"type": "nic", "nictype": "bridged", "parent": "br1", "hwaddr": "00:16:3e:aa:bb:cc"},
        "root": {"type": "disk", "path": "/", "pool": "default"}}}
    nics = nics_from_profile(profile, mac=lambda: "00:16:3e:00:00:00")
    assert nics == {"eth0": {"parent": "lxdbr0", "type": "nic", "nictype": "bridged", "hwaddr": "00:16:3e:00:00:00"},
                    "eth1": {"type": "nic", "nictype": "bridged", "parent": "br1", "hwaddr": "00:16:3e:aa:bb:cc"}}
    assert "hwaddr" not in profile["devices"]["eth0"]


def test_s37_generated_macs_are_in_lxd_range() -> None:
    assert generate_mac(lambda n: bytes([0, 0xAB, 0xFF])) == "00:16:3e:00:ab:ff"
    macs = {generate_mac() for _ in range(20)}
    assert all(re.fullmatch(r"00:16:3e(:[0-9a-f]{2}){3}", m) for m in macs)
    assert len(macs) > 1
    nics = nics_from_profile({"devices": {"eth0": {"type": "nic", "hwaddr": ""}}})
    assert nics["eth0"]["hwaddr"].startswith("00:16:3e:")


BRIDGE = {"name": "lxdbr0", "type": "bridge", "managed": True, "config": {"ipv6.address": "none"}}


def test_s38_managed_network_nic() -> None:
    nics = {"eth0": {"network": "lxdbr0", "type": "nic"}}
    assert networks_to_check(nics) == ["lxdbr0"]
    assert verify_nics_with_networks(nics, {"lxdbr0": BRIDGE}) == "lxdbr0"


def test_s38_legacy_parent_bridged_nic_with_empty_network() -> None:
    nics = {"eth0": {"parent": "lxdbr0", "nictype": "bridged", "type": "nic"}}
    assert verify_nics_with_networks(nics, {"lxdbr0": {}}) == "lxdbr0"


def test_s38_network_key_wins_over_parent() -> None:
    nics = {"eth0": {"network": "net1", "parent": "ignored", "type": "nic"}}
    assert networks_to_check(nics) == ["net1"]


def test_s39_ipv6_nic_passed_over_for_a_valid_one() -> None:
    nics = {"eth0": {"network": "lxdbr0", "type": "nic"}, "eno1": {"network": "valid-net", "type": "nic"}}
    networks = {"lxdbr0": {"name": "lxdbr0", "type": "bridge", "managed": True,
                           "config": {"ipv6.address": "fd42::1/64"}},
                "valid-net": {"name": "valid-net", "type": "bridge", "managed": True, "config": {}}}
    assert networks_to_check(nics) == ["valid-net", "lxdbr0"]
    assert verify_nics_with_networks(nics, networks) == "valid-net"


def test_s39_only_ipv6_nics_report_the_ipv6_refusal() -> None:
    nics = {"eth0": {"network": "lxdbr0", "type": "nic"}}
    networks = {"lxdbr0": {"name": "lxdbr0", "type": "bridge", "managed": True,
                           "config": {"ipv6.address": "auto"}}}
    with pytest.raises(IPv6NotSupportedError):
        verify_nics_with_networks(nics, networks)


def test_s40_no_usable_nic_message() -> None:
    nics = {"eth0": {"parent": "br0", "nictype": "not-bridge-or-macvlan", "type": "nic"}}
    with pytest.raises(NoUsableNicError) as exc:
        verify_nics_with_networks(nics, {"br0": {"type": "not-bridge-or-macvlan"}})
    assert str(exc.value) == (
        'no network device found with nictype "bridged" or "macvlan"\n'
        "\tthe following devices were checked: eth0\n"
        "Note: juju does not support IPv6.\n"
        'Reconfigure lxd to use a network of type "bridged" or "macvlan", disabling IPv6.')


def test_s40_nics_without_network_are_listed_as_checked() -> None:
    nics = {"eth1": {"type": "nic"}, "eth0": {"type": "nic", "parent": "p", "nictype": "physical"}}
    with pytest.raises(NoUsableNicError, match="checked: eth0, eth1\n"):
        verify_nics_with_networks(nics, {"p": {"type": "physical"}})


def test_s41_ipv6_refusal_exact() -> None:
    net = {"name": "lxdbr0", "type": "bridge", "managed": True, "config": {"ipv6.address": "something-not-nothing"}}
    with pytest.raises(IPv6NotSupportedError) as exc:
        verify_no_ipv6(net)
    assert str(exc.value) == ("juju does not support IPv6. Disable IPv6 in LXD via:\n"
                              "\tlxc network set lxdbr0 ipv6.address none\nand run the command again")


@pytest.mark.parametrize("net", [
    {"name": "eth0", "managed": False, "config": {"ipv6.address": "fd00::1/64"}},
    {"name": "b", "managed": True, "config": {}},
    {"name": "b", "managed": True, "config": {"ipv6.address": "none"}},
    {"name": "b", "managed": True},
])
def test_s41_networks_without_ipv6_pass(net: dict[str, Any]) -> None:
    verify_no_ipv6(net)


def test_s42_no_nic_standalone_creates_bridge_and_eth0() -> None:
    profile = {"name": "default", "config": {}, "description": "Default", "devices": {
        "root": {"type": "disk", "path": "/", "pool": "default"}}}
    assert verify_network_action(profile, network_api=True, clustered=False) == NetworkAction.ENSURE_DEFAULT
    assert bridge_network_request() == {
        "name": "lxdbr0", "type": "bridge", "description": "",
        "config": {"ipv4.address": "auto", "ipv4.nat": "true", "ipv6.address": "none", "ipv6.nat": "false"}}
    created = {"name": "lxdbr0", "type": "bridge", "managed": True, "config": {"ipv6.address": "none"}}
    assert profile_with_default_nic(profile, created) == {
        "config": {}, "description": "Default",
        "devices": {"root": {"type": "disk", "path": "/", "pool": "default"},
                    "eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0"}}}
    assert "eth0" not in profile["devices"]


def test_s42_bridge_name_and_nat_are_settings() -> None:
    body = bridge_network_request("gwtest0", nat=False)
    assert body["name"] == "gwtest0" and body["config"]["ipv4.nat"] == "false"
    put = profile_with_default_nic({"name": "p", "devices": {}}, {"type": "bridge"}, "gwtest0")
    assert put["devices"] == {"eth0": {"type": "nic", "nictype": "bridged", "parent": "gwtest0"}}


def test_s42_existing_ipv6_bridge_is_refused() -> None:
    with pytest.raises(IPv6NotSupportedError):
        profile_with_default_nic({"name": "p", "devices": {}},
                                 {"name": "lxdbr0", "managed": True, "config": {"ipv6.address": "auto"}})


def test_s42_unmanaged_untyped_network_gets_macvlan() -> None:
    assert default_nic({"devices": {}}, {"managed": False, "type": ""}) == (
        "eth0", {"type": "nic", "nictype": "macvlan", "parent": "lxdbr0"})


def test_s43_first_free_eth_name() -> None:
    profile = {"name": "default", "devices": {"eth0": {}, "eth1": {}}}
    assert unique_nic_name(profile) == "eth2"
    assert profile_with_default_nic(profile, {"type": "bridge"})["devices"]["eth2"] == {
        "type": "nic", "nictype": "bridged", "parent": "lxdbr0"}
    assert unique_nic_name({"devices": {"eth1": {}}}) == "eth0"


def test_s43_no_free_eth_name() -> None:
    profile = {"name": "full", "devices": {f"eth{i}": {} for i in range(100)}}
    with pytest.raises(NetworkConfigError, match=r'^failed to generate a unique device name for profile "full"$'):
        unique_nic_name(profile)


def test_s44_no_nic_on_cluster() -> None:
    with pytest.raises(NoNicError, match=r'^profile "default" does not have any devices configured with type "nic"$'):
        verify_network_action({"name": "default", "devices": {}}, network_api=True, clustered=True)


def test_s44_no_nic_without_network_api() -> None:
    with pytest.raises(NoNicError):
        verify_network_action({"name": "default"}, network_api=False, clustered=False)


def test_s44_nics_present_choose_api_or_file() -> None:
    profile = {"name": "default", "devices": {"eth0": {"type": "nic", "parent": "lxdbr0"}}}
    assert verify_network_action(profile, network_api=True, clustered=True) == NetworkAction.VERIFY_WITH_API
    assert verify_network_action(profile, network_api=False, clustered=False) == NetworkAction.VERIFY_WITH_FILE


def test_s45_interface_info_from_devices_sorted() -> None:
    nics = {"eth0": {"type": "nic", "parent": "lxdbr0", "hwaddr": "00:16:3e:00:00:01", "nictype": "bridged"},
            "eno9": {"type": "nic", "parent": "br-eno9", "hwaddr": "00:16:3e:00:00:02", "mtu": "9000"}}
    infos = interface_info_from_devices(nics)
    assert [(i.name, i.parent, i.mac, i.mtu, i.config_type, i.origin) for i in infos] == [
        ("eno9", "br-eno9", "00:16:3e:00:00:02", 9000, "dhcp", "provider"),
        ("eth0", "lxdbr0", "00:16:3e:00:00:01", 0, "dhcp", "provider")]


def test_s45_bad_mtu() -> None:
    with pytest.raises(NetworkConfigError, match=r"^parsing device MTU: "):
        interface_info_from_devices({"eth0": {"type": "nic", "mtu": "big"}})


def _bridge_file(**over: str) -> str:
    lines = {"USE_LXD_BRIDGE": '"true"', "LXD_BRIDGE": '"lxdbr0"', "LXD_IPV4_ADDR": '"10.0.4.1"',
             "LXD_IPV6_ADDR": '""'} | over
    return "# comment\n" + "\n".join(f"{k}={v}" for k, v in lines.items()) + "\n"


def _reader(content: str | None):  # type: ignore[no-untyped-def]
    def read(path: str) -> str:
        read.paths.append(path)  # type: ignore[attr-defined]
        if content is None:
            raise FileNotFoundError(path)
        return content
    read.paths = []  # type: ignore[attr-defined]
    return read


APT_SUFFIX = ("\nIt looks like your LXD bridge has not yet been configured. Configure it via:\n\n"
              "\tsudo dpkg-reconfigure -p medium lxd\n\nand run the command again.")
SNAP_SUFFIX = "\nIt looks like your LXD bridge has not yet been configured."


@pytest.mark.parametrize(("snap", "path", "suffix"), [
    (False, BRIDGE_CONFIG_FILE, APT_SUFFIX), (True, SNAP_BRIDGE_CONFIG_FILE, SNAP_SUFFIX)])
def test_s46_bridge_file_messages(snap: bool, path: str, suffix: str) -> None:
    def err(content: str | None) -> str:
        with pytest.raises(BridgeConfigError) as exc:
            check_bridge_config_file(_reader(content), snap)
        return str(exc.value)

    assert err(None) == f"no config file found at {path}{suffix}"
    assert err(_bridge_file(USE_LXD_BRIDGE="false")) == f"{path} has USE_LXD_BRIDGE set to false{suffix}"
    assert err(_bridge_file(LXD_BRIDGE='""')) == f"{path} has no LXD_BRIDGE set{suffix}"
    assert err(_bridge_file(LXD_IPV4_ADDR="")) == f"lxdbr0 has no ipv4 or ipv6 subnet enabled{suffix}"
    ipv6 = f"{path} has IPv6 enabled.\nJuju doesn't currently support IPv6."
    if not snap:
        ipv6 += "\nDisable IPv6 via:\n\n\tsudo dpkg-reconfigure -p medium lxd\n\nand run the command again."
    assert err(_bridge_file(LXD_IPV6_ADDR='"fd00::1"')) == ipv6


def test_s46_bridge_file_ok_reads_the_right_path() -> None:
    read = _reader(_bridge_file(USE_LXD_BRIDGE="notabool"))
    assert check_bridge_config_file(read, snap=True) == "lxdbr0"
    assert read.paths == [SNAP_BRIDGE_CONFIG_FILE]
    read = _reader(_bridge_file().encode())  # type: ignore[arg-type]
    assert check_bridge_config_file(read, snap=False) == "lxdbr0"
    assert read.paths == [BRIDGE_CONFIG_FILE]


def test_s46_other_read_errors_propagate() -> None:
    def read(path: str) -> str:
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        check_bridge_config_file(read, snap=False)


def test_s46_nic_matches_configured_bridge() -> None:
    nics = {"eth0": {"type": "nic", "parent": "lxdbr0", "nictype": "macvlan"}}
    assert verify_nics_with_config_file(nics, _reader(_bridge_file()), snap=False) == "lxdbr0"


def test_s46_nic_on_other_bridge_or_type_is_refused() -> None:
    nics = {"eth1": {"type": "nic", "parent": "lxdbr0", "nictype": "physical"},
            "eth0": {"type": "nic", "parent": "br9", "nictype": "bridged"}}
    with pytest.raises(NoUsableNicError) as exc:
        verify_nics_with_config_file(nics, _reader(_bridge_file()), snap=True)
    assert str(exc.value) == (
        'no network device found with nictype "bridged" or "macvlan" that uses the configured bridge in '
        "/etc/default/lxd-bridge\n\tthe following devices were checked: [eth0 eth1]")


@pytest.mark.parametrize(("mac", "mtu", "expected"), [
    ("", 0, {}),
    ("00:16:3e:00:00:01", 0, {"hwaddr": "00:16:3e:00:00:01"}),
    ("", 9000, {"mtu": "9000"}),
    ("00:16:3e:00:00:01", 1500, {"hwaddr": "00:16:3e:00:00:01", "mtu": "1500"}),
])
def test_s47_new_nic_device(mac: str, mtu: int, expected: dict[str, str]) -> None:
    assert new_nic_device("eth1", "br-eth1", mac, mtu) == {
        "type": "nic", "nictype": "bridged", "name": "eth1", "parent": "br-eth1"} | expected


def test_s48_empty_parent() -> None:
    with pytest.raises(NetworkConfigError, match=r"^parent interface name is empty$"):
        devices_from_interface_info([InterfaceInfo(name="eth0", parent="", cidr="10.0.0.0/24")])


def test_s48_known_cidr_is_not_reported() -> None:
    nics, unknown = devices_from_interface_info([
        InterfaceInfo(name="eth0", parent="br-eth0", cidr="10.0.0.0/24", mac="00:16:3e:00:00:01", mtu=9000)])
    assert unknown == []
    assert nics == {"eth0": {"type": "nic", "nictype": "bridged", "name": "eth0", "parent": "br-eth0",
                             "hwaddr": "00:16:3e:00:00:01", "mtu": "9000"}}


def test_s48_missing_cidr_reports_the_parent() -> None:
    _, unknown = devices_from_interface_info([InterfaceInfo(name="eth0", parent="br-eth0")])
    assert unknown == ["br-eth0"]


def test_s48_loopback_skipped_and_other_types_refused() -> None:
    nics, unknown = devices_from_interface_info([InterfaceInfo(name="lo", type="loopback"),
                                                 InterfaceInfo(name="eth0", parent="b"),
                                                 InterfaceInfo(name="eth1", parent="b")])
    assert list(nics) == ["eth0", "eth1"] and unknown == ["b", "b"]
    with pytest.raises(NetworkConfigError, match=r'^interface type "bond" not supported$'):
        devices_from_interface_info([InterfaceInfo(name="bond0", parent="b", type="bond")])
    with pytest.raises(NetworkConfigError, match=r'^interface type "" not supported$'):
        devices_from_interface_info([InterfaceInfo(name="x0", parent="b", type="")])


def test_s48_interface_validation() -> None:
    with pytest.raises(ValidationError):
        InterfaceInfo(name="")
    with pytest.raises(ValidationError):
        InterfaceInfo(name="eth0", mtu=-1)


def test_s52_single_unknown_parent_on_the_bridge_needs_ipv4() -> None:
    assert needs_bridge_ipv4(["lxdbr0"], network_api=True)
    assert not needs_bridge_ipv4(["lxdbr0"], network_api=False)
    assert not needs_bridge_ipv4(["lxdbr0", "lxdbr0"], network_api=True)
    assert not needs_bridge_ipv4(["br-eth0"], network_api=True)
    assert not needs_bridge_ipv4([], network_api=True)
    assert needs_bridge_ipv4(["gwtest0"], network_api=True, bridge="gwtest0")
