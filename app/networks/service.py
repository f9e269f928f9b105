"""Container networking on an LXD server: a profile's NICs, verifying they are usable, creating the bridge and a
NIC when a profile has none, and giving a bridge IPv4."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.lxd.client import Client
from app.lxd.errors import LXDError, NotFound
from app.networks.decisions import (
    DEFAULT_BRIDGE,
    DEFAULT_PROFILE,
    NetworkAction,
    NetworkConfigError,
    bridge_network_request,
    generate_mac,
    ipv4_update,
    nic_devices,
    profile_with_default_nic,
    verify_network_action,
    verify_nics_with_config_file,
    verify_nics_with_networks,
)
from app.networks.decisions import nics_from_profile as _nics_from_profile

SNAP_SOCKET = "/var/snap/lxd/common/lxd/unix.socket"


class NetworkVerifyError(NetworkConfigError):
    """A profile's network cannot be used, or could not be checked; the message says why."""


@dataclass(frozen=True)
class NetworkVerification:
    """The outcome of `verify_network_device`: the bridge containers of the profile attach to."""

    bridge: str
    created_bridge: bool = False
    added_nic: str | None = None


def _err(exc: BaseException) -> str:
    return str(getattr(exc, "error", None) or exc)


async def _network(client: Client, name: str) -> dict[str, Any]:
    net = await client.networks.get(name)
    return net.model_dump()


async def nics_from_profile(client: Client, profile: str = DEFAULT_PROFILE,
                            mac: Callable[[], str] = generate_mac) -> dict[str, dict[str, str]]:
    """The profile's NIC devices, each without a MAC given a new one (not written back)."""
    p = await client.profiles.get(profile)
    return _nics_from_profile(p.model_dump(), mac)


async def ensure_ipv4(client: Client, network: str, *, nat: bool = True, address: str = "auto") -> bool:
    """Give `network` IPv4 (`ipv4.address=auto` unless another `address` is given, NAT as asked) when it has
    none or `none`; whether it changed. A present address, even an empty one, is left alone."""
    net = await client.networks.get(network)
    update = ipv4_update(net.model_dump())
    if update is None:
        return False
    update["config"]["ipv4.address"] = address
    update["config"]["ipv4.nat"] = "true" if nat else "false"
    await client.networks.update(network, update, etag=net.etag)
    return True


async def _verify_nics_with_api(client: Client, nics: Mapping[str, Mapping[str, str]]) -> str:
    """The network of the first usable NIC (NICs in name order, each network fetched when the decision reaches
    it: `verify_nics_with_networks` names the one it lacks)."""
    fetched: dict[str, dict[str, Any]] = {}
    while True:
        try:
            return verify_nics_with_networks(nics, fetched)
        except KeyError as missing:
            net_name = str(missing.args[0])
        try:
            fetched[net_name] = await _network(client, net_name)
        except LXDError as exc:
            raise NetworkVerifyError(f'retrieving network "{net_name}": {_err(exc)}') from exc


async def ensure_default_networking(client: Client, profile: Mapping[str, Any], etag: str | None, *,
                                    bridge: str = DEFAULT_BRIDGE, nat: bool = True,
                                    bridge_config: Mapping[str, str] | None = None) -> str:
    """Create `bridge` when missing (IPv4 auto, NAT as asked, no IPv6, plus `bridge_config`), then add a NIC on
    it to the profile (the first free `ethN`, bridged on a bridge network, else macvlan) under the profile's
    ETag; the NIC's name."""
    try:
        network = await _network(client, bridge)
    except NotFound:
        body = bridge_network_request(bridge, nat)
        config = {**body["config"], **dict(bridge_config or {})}
        await client.networks.create(bridge, type=body["type"], config=config)
        network = await _network(client, bridge)
    new = profile_with_default_nic(profile, network, bridge)
    added = next(k for k in new["devices"] if k not in (profile.get("devices") or {}))
    await client.profiles.update(str(profile.get("name") or ""), new, etag=etag)
    return added


def _read_text(path: str) -> str:
    return Path(path).read_text()


async def verify_network_device(client: Client, profile: str = DEFAULT_PROFILE, *, bridge: str = DEFAULT_BRIDGE,
                                nat: bool = True, bridge_config: Mapping[str, str] | None = None,
                                create: bool = True,
                                read_file: Callable[[str], str | bytes] = _read_text,
                                snap: bool | None = None) -> NetworkVerification:
    """Check that containers of `profile` get a usable network, and give them one when the profile has no NIC.

    With NICs: the first (by name) that is bridged or macvlan, or sits on a bridge or macvlan network, wins;
    NICs on IPv6 networks are passed over, and the IPv6 refusal is the error when nothing else was usable.
    A server without the network API is checked against its legacy bridge file instead. With no NIC on a
    standalone server (and `create`), `bridge` is created when missing (NAT as asked, `bridge_config` added)
    and an `ethN` NIC on it is added to the profile; on a cluster that is refused.
    Errors name the profile: `profile "<name>": ...`.
    """
    facts = await client.server_info()
    p = await client.profiles.get(profile)
    data = p.model_dump()
    action = verify_network_action(data, facts.network_api, facts.clustered)
    if action is NetworkAction.ENSURE_DEFAULT:
        if not create:
            raise NetworkVerifyError(f'profile "{profile}" does not have any devices configured with type "nic"')
        try:
            existed = True
            try:
                await client.networks.get(bridge)
            except NotFound:
                existed = False
            added = await ensure_default_networking(client, data, p.etag, bridge=bridge, nat=nat,
                                                    bridge_config=bridge_config)
        except (LXDError, NetworkConfigError) as exc:
            raise NetworkVerifyError(f"ensuring default bridge config: {_err(exc)}") from exc
        return NetworkVerification(bridge=bridge, created_bridge=not existed, added_nic=added)
    nics = nic_devices(data.get("devices"))
    try:
        if action is NetworkAction.VERIFY_WITH_API:
            found = await _verify_nics_with_api(client, nics)
        else:
            is_snap = await asyncio.to_thread(os.path.exists, SNAP_SOCKET) if snap is None else snap
            found = await asyncio.to_thread(verify_nics_with_config_file, nics, read_file, is_snap)
    except NetworkConfigError as exc:
        raise NetworkVerifyError(f'profile "{profile}": {exc}') from exc
    return NetworkVerification(bridge=found)
