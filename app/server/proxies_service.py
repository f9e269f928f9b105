"""Pushing proxy settings into LXD (`core.proxy_http`, `core.proxy_https`, `core.proxy_ignore_hosts`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from app.lxd.client import Client
from app.lxd.errors import LXDUnavailable
from app.server.proxies import proxy_config
from app.server.service import update_server_config

log = logging.getLogger(__name__)


async def configure_proxies(client: Client, *, http: str | None = None, https: str | None = None,
                            no_proxy: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """Set LXD's three proxy keys (all of them, an empty value clearing one; a value not given comes from the
    `http_proxy`/`https_proxy`/`no_proxy` environment). When LXD cannot be reached nothing is done and None is
    returned; otherwise the keys set."""
    try:
        await client.server_info(refresh=True)
    except LXDUnavailable as exc:
        log.info("LXD is not reachable, proxies not configured: %s", exc)
        return None
    config = proxy_config(http, https, no_proxy, env)
    await update_server_config(client, config)
    return config
