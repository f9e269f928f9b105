"""Address type and scope, and the usable addresses of a container from its LXD state."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from app.lxd.models import InstanceState

DEFAULT_SKIPPED_INTERFACES = ("lxdbr0", "lxcbr0")

_CLOUD_LOCAL = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]
_FAN = ipaddress.ip_network("240.0.0.0/4")
_LINK_LOCAL_V4_MCAST = ipaddress.ip_network("224.0.0.0/24")


class AddressType(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    HOSTNAME = "hostname"


class Scope(StrEnum):
    UNKNOWN = ""
    PUBLIC = "public"
    CLOUD_LOCAL = "local-cloud"
    FAN_LOCAL = "local-fan"
    MACHINE_LOCAL = "local-machine"
    LINK_LOCAL = "link-local"


@dataclass(frozen=True)
class Address:
    """One address of a container: its value, type, scope and the interface it is on."""

    value: str
    type: AddressType
    scope: Scope
    interface: str = ""

    @property
    def family(self) -> str:
        return {AddressType.IPV4: "inet", AddressType.IPV6: "inet6"}.get(self.type, "")


def address_type(value: str) -> AddressType:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return AddressType.HOSTNAME
    return AddressType.IPV4 if ip.version == 4 else AddressType.IPV6


def address_scope(value: str) -> Scope:
    """The scope of an address: loopback, private/ULA, fan (240/4), link-local, global; else unknown."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return Scope.MACHINE_LOCAL if value == "localhost" else Scope.UNKNOWN
    if ip.is_loopback:
        return Scope.MACHINE_LOCAL
    if any(ip in net for net in _CLOUD_LOCAL if net.version == ip.version):
        return Scope.CLOUD_LOCAL
    if ip.version == 4 and ip in _FAN:
        return Scope.FAN_LOCAL
    if _is_link_local(ip):
        return Scope.LINK_LOCAL
    if _is_global_unicast(ip):
        return Scope.PUBLIC
    return Scope.UNKNOWN


def _is_link_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.is_link_local:
        return True
    if ip.version == 4:
        return ip in _LINK_LOCAL_V4_MCAST
    # ff02::/16 (link-local multicast) and ff01::/16 (interface-local multicast), any flags nibble
    return ip.is_multicast and (int(ip) >> 112) & 0xF in (1, 2)


def _is_global_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return False
    return not (ip.version == 4 and str(ip) == "255.255.255.255")


def make_address(value: str, interface: str = "") -> Address:
    return Address(value=value, type=address_type(value), scope=address_scope(value), interface=interface)


def container_addresses(state: InstanceState | None,
                        skip_interfaces: Iterable[str] = DEFAULT_SKIPPED_INTERFACES) -> list[Address]:
    """The usable addresses in an LXD instance state: none on the skipped bridges, no loopback, no link-local.

    Interfaces are visited in name order, addresses in LXD's order, so the result is deterministic.
    """
    network = (state.network if state is not None else None) or {}
    skipped = set(skip_interfaces)
    out: list[Address] = []
    for name in sorted(network):
        if name in skipped:
            continue
        for entry in network[name].addresses:
            if not entry.address:
                continue
            addr = make_address(entry.address, name)
            if addr.scope in (Scope.LINK_LOCAL, Scope.MACHINE_LOCAL):
                continue
            out.append(addr)
    return out
