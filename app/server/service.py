"""The LXD server itself: config merged under its ETag, the HTTPS listener, projects and cluster members."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from app.containers.spec import merge_config
from app.lxd.client import Client
from app.lxd.servers import (
    DEFAULT_HTTPS_LISTENER,
    HTTPS_ADDRESS_KEY,
    IPV4_HTTPS_LISTENER,
    is_ipv6_unsupported,
)

log = logging.getLogger(__name__)


async def update_server_config(client: Client, config: Mapping[str, str] | None) -> None:
    """Merge `config` into the server's config: read it, then replace the whole merged config with
    `If-Match` of the ETag read. Keys not given are kept; an empty value is sent as given."""
    current = await client.config.get()
    merged = merge_config({k: str(v) for k, v in current.config.items()}, dict(config or {}))
    await client.config.replace(merged, etag=current.etag)


async def enable_https_listener(client: Client, address: str | None = None, *, port: int | None = None) -> str:
    """Make LXD listen on HTTPS and return the address set (`core.https_address`).

    With no `address` it is `[::]` (with `:port` when given), and when the server answers that IPv6 is not
    supported ("socket: address family not supported by protocol") it is `0.0.0.0` instead. An explicit address
    is set as it is, without fallback. A failure to read the config is never a reason to fall back.
    """
    suffix = f":{port}" if port else ""
    if address:
        await update_server_config(client, {HTTPS_ADDRESS_KEY: address})
        return address
    first = DEFAULT_HTTPS_LISTENER + suffix
    try:
        await update_server_config(client, {HTTPS_ADDRESS_KEY: first})
        return first
    except Exception as exc:
        if not is_ipv6_unsupported(getattr(exc, "error", None) or str(exc)):
            raise
        log.info("IPv6 is not supported by the LXD host; listening on IPv4 only")
    fallback = IPV4_HTTPS_LISTENER + suffix
    await update_server_config(client, {HTTPS_ADDRESS_KEY: fallback})
    return fallback
