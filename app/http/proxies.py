"""The client address of a request: the connection's peer, or, when the peer is a trusted proxy
(`LXDGW_TRUSTED_PROXIES`: addresses and CIDR networks; none by default), what `X-Forwarded-For` says.

Each proxy appends the address it received the request from, so the header is read from the right: the right-most
address that is not itself a trusted proxy is the client. Everything left of it was written by the client (or an
untrusted hop) and is ignored. From a peer that is not trusted the header is ignored altogether, so a caller cannot
pick the address its per-address limits (`LXDGW_AUTH_FAILURE_RATE_LIMIT`, `LXDGW_RATE_LIMIT` without
authentication) count against.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def trusted_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """The networks of `LXDGW_TRUSTED_PROXIES` (an address alone is a network of one); ValueError for an entry that
    is neither."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: tuple[Network, ...]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in networks)


def client_of(peer: str | None, forwarded_for: Iterable[str], networks: tuple[Network, ...]) -> str:
    """The client's address: `peer` unless it is a trusted proxy; then the right-most address of the
    `X-Forwarded-For` values that is not a trusted proxy (the left-most one when all are; `peer` when there is no
    header)."""
    if peer is None:
        return "unknown"
    if not networks or not _trusted(_address(peer), networks):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    if not hops:
        return peer
    for hop in reversed(hops):
        address = _address(hop)
        if not _trusted(address, networks):
            return str(address) if address is not None else hop
    return str(_address(hops[0]))
