"""Container networking decisions that need no server: NIC devices, interface info, bridge checks.

The LXD-backed operations (verify a profile's network, ensure the default bridge, ensure IPv4) fetch what these
functions need and apply what they decide.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.http.errors import ProblemError

NIC = "nic"
NIC_TYPE_BRIDGED = "bridged"
NIC_TYPE_MACVLAN = "macvlan"
NET_TYPE_BRIDGE = "bridge"
NET_TYPE_MACVLAN = "macvlan"
VALID_NIC_TYPES = (NIC_TYPE_BRIDGED, NIC_TYPE_MACVLAN)
VALID_NET_TYPES = (NET_TYPE_BRIDGE, NET_TYPE_MACVLAN)
DEFAULT_BRIDGE = "lxdbr0"
DEFAULT_PROFILE = "default"
MAX_NIC_INDEX = 100

BRIDGE_CONFIG_FILE = "/etc/default/lxd-bridge"
SNAP_BRIDGE_CONFIG_FILE = "/var/snap/lxd/common/lxd-bridge/config"

MAC_PREFIX = "00:16:3e"


class NetworkConfigError(ProblemError, ValueError):
    """A network configuration that cannot be used."""

    status = 409
    slug = "network-unusable"


class IPv6NotSupportedError(NetworkConfigError):
    """The network has IPv6 enabled."""


class NoUsableNicError(NetworkConfigError):
    """No NIC of the profile is bridged or macvlan on a usable network."""


class NoNicError(NetworkConfigError):
    """The profile has no NIC and one may not be created here."""


class BridgeConfigError(NetworkConfigError):
    """The legacy LXD bridge configuration file is missing or unusable."""


Device = dict[str, str]


class InterfaceSpec(BaseModel):
    """A container network interface to create: the NIC `name` on the host bridge `parent`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.:-]+$")]
    parent: str = Field("", description="host bridge or device the NIC attaches to")
    mac: str = Field("", pattern=r"^$|^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
    mtu: Annotated[int, Field(ge=0, le=65535)] = 0
    cidr: str = Field("", description="subnet of the interface; empty when unknown")
    type: str = Field("ethernet", description="`ethernet`; `loopback` interfaces are skipped")


class InterfaceInfo(InterfaceSpec):
    """A container network interface as read back from its NIC devices (addressed by DHCP)."""

    config_type: str = "dhcp"
    origin: str = "provider"


def generate_mac(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A random MAC in LXD's `00:16:3e` range."""
    return MAC_PREFIX + "".join(f":{b:02x}" for b in token_bytes(3))


def new_nic_device(name: str, parent: str, mac: str = "", mtu: int = 0) -> Device:
    """A bridged NIC device; `hwaddr` and `mtu` only when given. LXD picks the host-side name."""
    dev = {"type": NIC, "nictype": NIC_TYPE_BRIDGED, "name": name, "parent": parent}
    if mac:
        dev["hwaddr"] = mac
    if mtu > 0:
        dev["mtu"] = str(mtu)
    return dev


def devices_from_interface_info(interfaces: Sequence[InterfaceSpec]) -> tuple[dict[str, Device], list[str]]:
    """NIC devices for the interfaces, and the parents of those with no known CIDR (in order, repeats kept)."""
    nics: dict[str, Device] = {}
    unknown: list[str] = []
    for iface in interfaces:
        if iface.type == "loopback":
            continue
        if iface.type != "ethernet":
            raise NetworkConfigError(f'interface type "{iface.type}" not supported')
        if not iface.parent:
            raise NetworkConfigError("parent interface name is empty")
        if not iface.cidr:
            unknown.append(iface.parent)
        nics[iface.name] = new_nic_device(iface.name, iface.parent, iface.mac, iface.mtu)
    return nics, unknown


def interface_info_from_devices(nics: Mapping[str, Mapping[str, str]]) -> list[InterfaceInfo]:
    """Interface info (DHCP, provider origin) for NIC devices, sorted by interface name."""
    out = []
    for name, dev in nics.items():
        mtu = 0
        if dev.get("mtu"):
            try:
                mtu = int(dev["mtu"])
            except ValueError as exc:
                raise NetworkConfigError(f"parsing device MTU: {exc}") from None
        out.append(InterfaceInfo.model_construct(
            name=name, parent=dev.get("parent", ""), mac=dev.get("hwaddr", ""), mtu=mtu, cidr="",
            type="ethernet", config_type="dhcp", origin="provider"))
    return sorted(out, key=lambda i: i.name)


def nic_devices(devices: Mapping[str, Mapping[str, str]] | None) -> dict[str, Device]:
    """The devices of type `nic`, unchanged."""
    return {k: dict(v) for k, v in (devices or {}).items() if (v or {}).get("type") == NIC}


def nics_from_profile(profile: Mapping[str, Any], mac: Callable[[], str] = generate_mac) -> dict[str, Device]:
    """A profile's NIC devices, each missing or empty `hwaddr` filled with a new MAC (not written back)."""
    nics = nic_devices(profile.get("devices"))
    for dev in nics.values():
        if not dev.get("hwaddr"):
            dev["hwaddr"] = mac()
    return nics


def ipv6_refusal(network_name: str) -> str:
    return ("juju does not support IPv6. Disable IPv6 in LXD via:\n"
            f"\tlxc network set {network_name} ipv6.address none\nand run the command again")


def verify_no_ipv6(network: Mapping[str, Any]) -> None:
    """Refuse a managed network with IPv6 enabled (an `ipv6.address` other than `none`)."""
    if not network.get("managed"):
        return
    addr = (network.get("config") or {}).get("ipv6.address")
    if addr is None or addr == "none":
        return
    raise IPv6NotSupportedError(ipv6_refusal(network.get("name", "")))


def nic_network_name(nic: Mapping[str, str]) -> str:
    """The network a NIC uses: its `network` key when present, else its `parent`."""
    return nic["network"] if "network" in nic else nic.get("parent", "")


def networks_to_check(nics: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The networks to fetch to verify the NICs, in NIC-name order, without repeats or empty names."""
    out: list[str] = []
    for name in sorted(nics):
        net = nic_network_name(nics[name])
        if net and net not in out:
            out.append(net)
    return out


def is_usable_nic(nic: Mapping[str, str], network: Mapping[str, Any]) -> bool:
    return network.get("type") in VALID_NET_TYPES or nic.get("nictype") in VALID_NIC_TYPES


def no_usable_nic_message(checked: list[str]) -> str:
    return (f'no network device found with nictype "{NIC_TYPE_BRIDGED}" or "{NIC_TYPE_MACVLAN}"\n'
            f"\tthe following devices were checked: {', '.join(checked)}\n"
            "Note: juju does not support IPv6.\n"
            f'Reconfigure lxd to use a network of type "{NIC_TYPE_BRIDGED}" or "{NIC_TYPE_MACVLAN}", disabling IPv6.')


def verify_nics_with_networks(nics: Mapping[str, Mapping[str, str]],
                              networks: Mapping[str, Mapping[str, Any]]) -> str:
    """The bridge of the first usable NIC (in name order), given the networks of `networks_to_check`.

    NICs on an IPv6 network are passed over; when no NIC is usable, the IPv6 refusal is raised if there was one,
    else `NoUsableNicError` naming every NIC checked.
    """
    checked: list[str] = []
    ipv6_error: IPv6NotSupportedError | None = None
    for name in sorted(nics):
        nic = nics[name]
        checked.append(name)
        net_name = nic_network_name(nic)
        if not net_name:
            continue
        network = networks.get(net_name)
        if network is None:
            raise KeyError(net_name)
        try:
            verify_no_ipv6(network)
        except IPv6NotSupportedError as exc:
            ipv6_error = exc
            continue
        if is_usable_nic(nic, network):
            return net_name
    if ipv6_error is not None:
        raise ipv6_error
    raise NoUsableNicError(no_usable_nic_message(checked))


class NetworkAction(StrEnum):
    ENSURE_DEFAULT = "ensure-default"
    VERIFY_WITH_API = "verify-with-api"
    VERIFY_WITH_FILE = "verify-with-file"


def verify_network_action(profile: Mapping[str, Any], network_api: bool, clustered: bool) -> NetworkAction:
    """What verifying a profile's network takes: checking its NICs, or creating the default bridge and a NIC.

    A profile with no NIC on a cluster (or a server without the network API) is refused.
    """
    if not nic_devices(profile.get("devices")):
        if network_api and not clustered:
            return NetworkAction.ENSURE_DEFAULT
        raise NoNicError(f'profile "{profile.get("name", "")}" does not have any devices configured with type "nic"')
    return NetworkAction.VERIFY_WITH_API if network_api else NetworkAction.VERIFY_WITH_FILE


def unique_nic_name(profile: Mapping[str, Any]) -> str:
    """The first of eth0…eth99 not used by any device of the profile."""
    used = set(profile.get("devices") or {})
    for i in range(MAX_NIC_INDEX):
        if f"eth{i}" not in used:
            return f"eth{i}"
    raise NetworkConfigError(f'failed to generate a unique device name for profile "{profile.get("name", "")}"')


def bridge_network_request(name: str = DEFAULT_BRIDGE, nat: bool = True) -> dict[str, Any]:
    """The body creating the default bridge: IPv4 auto (NAT as asked), IPv6 off."""
    return {"name": name, "type": NET_TYPE_BRIDGE, "description": "",
            "config": {"ipv4.address": "auto", "ipv4.nat": "true" if nat else "false",
                       "ipv6.address": "none", "ipv6.nat": "false"}}


def default_nic(profile: Mapping[str, Any], network: Mapping[str, Any], bridge: str = DEFAULT_BRIDGE
                ) -> tuple[str, Device]:
    """The NIC to add to a profile with none: the first free ethN, bridged on a bridge network, else macvlan."""
    nictype = NIC_TYPE_BRIDGED if network.get("type") == NET_TYPE_BRIDGE else NIC_TYPE_MACVLAN
    return unique_nic_name(profile), {"type": NIC, "nictype": nictype, "parent": bridge}


def profile_with_default_nic(profile: Mapping[str, Any], network: Mapping[str, Any],
                             bridge: str = DEFAULT_BRIDGE) -> dict[str, Any]:
    """The writable profile body (`config`, `description`, `devices`) with the default NIC added.

    `network` is the bridge as LXD reports it (after creating it when it was missing); an IPv6 one is refused.
    """
    verify_no_ipv6(network)
    name, dev = default_nic(profile, network, bridge)
    devices = {k: dict(v or {}) for k, v in (profile.get("devices") or {}).items()}
    devices[name] = dev
    return {"config": dict(profile.get("config") or {}), "description": profile.get("description", ""),
            "devices": devices}


def ipv4_update(network: Mapping[str, Any]) -> dict[str, Any] | None:
    """The writable network body enabling IPv4 (auto + NAT) when `ipv4.address` is absent or `none`; else None."""
    config = dict(network.get("config") or {})
    if "ipv4.address" in config and config["ipv4.address"] != "none":
        return None
    config["ipv4.address"] = "auto"
    config["ipv4.nat"] = "true"
    return {"config": config, "description": network.get("description", "")}


def needs_bridge_ipv4(unknown_parents: list[str], network_api: bool, bridge: str = DEFAULT_BRIDGE) -> bool:
    """Whether a container's only unknown-subnet parent is the default bridge, whose IPv4 must then be ensured."""
    return network_api and unknown_parents == [bridge]


# Legacy servers without the network API: the bridge is described by a shell-style file.

_NOT_CONFIGURED = "\nIt looks like your LXD bridge has not yet been configured."
_APT_CONFIGURE = " Configure it via:\n\n\tsudo dpkg-reconfigure -p medium lxd\n\nand run the command again."
_APT_DISABLE_IPV6 = "\nDisable IPv6 via:\n\n\tsudo dpkg-reconfigure -p medium lxd\n\nand run the command again."
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def bridge_config_file(snap: bool) -> str:
    return SNAP_BRIDGE_CONFIG_FILE if snap else BRIDGE_CONFIG_FILE


def _not_configured(msg: str, snap: bool) -> BridgeConfigError:
    return BridgeConfigError(msg + _NOT_CONFIGURED + ("" if snap else _APT_CONFIGURE))


def check_bridge_config_file(read: Callable[[str], str | bytes], snap: bool) -> str:
    """The bridge named by the legacy config file, checking it is enabled, has IPv4 and no IPv6.

    `read(path)` returns the file's content; FileNotFoundError means there is none.
    """
    path = bridge_config_file(snap)
    try:
        content = read(path)
    except FileNotFoundError:
        raise _not_configured(f"no config file found at {path}", snap) from None
    text = content.decode() if isinstance(content, bytes) else content
    subnet = False
    bridge = ""
    for line in text.split("\n"):
        if line.startswith("USE_LXD_BRIDGE="):
            value = line[len("USE_LXD_BRIDGE="):].strip(' "')
            if value in _FALSE:
                raise _not_configured(f"{path} has USE_LXD_BRIDGE set to false", snap)
        elif line.startswith("LXD_BRIDGE="):
            bridge = line[len("LXD_BRIDGE="):].strip(' "')
            if not bridge:
                raise _not_configured(f"{path} has no LXD_BRIDGE set", snap)
        elif line.startswith("LXD_IPV4_ADDR="):
            if line[len("LXD_IPV4_ADDR="):].strip(' "'):
                subnet = True
        elif line.startswith("LXD_IPV6_ADDR=") and line[len("LXD_IPV6_ADDR="):].strip(' "'):
            msg = f"{path} has IPv6 enabled.\nJuju doesn't currently support IPv6."
            raise BridgeConfigError(msg + ("" if snap else _APT_DISABLE_IPV6))
    if not subnet:
        raise _not_configured(f"{bridge} has no ipv4 or ipv6 subnet enabled", snap)
    return bridge


def verify_nics_with_config_file(nics: Mapping[str, Mapping[str, str]], read: Callable[[str], str | bytes],
                                 snap: bool) -> str:
    """The configured bridge, when a NIC (in name order) is bridged or macvlan on it."""
    bridge = check_bridge_config_file(read, snap)
    checked: list[str] = []
    for name in sorted(nics):
        checked.append(name)
        nic = nics[name]
        if nic.get("parent") == bridge and nic.get("nictype") in VALID_NIC_TYPES:
            return bridge
    raise NoUsableNicError(
        f'no network device found with nictype "{NIC_TYPE_BRIDGED}" or "{NIC_TYPE_MACVLAN}" that uses the '
        f"configured bridge in {BRIDGE_CONFIG_FILE}\n\tthe following devices were checked: [{' '.join(checked)}]")

